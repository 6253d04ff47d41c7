//! Container image references as the kubelet and the runtime read them: docker/distribution's
//! `reference.ParseNormalizedNamed` (Docker Hub short names become `docker.io/library/x`), the
//! kubelet's `parsers.ParseImageName` (a missing tag is `latest`) and the host a runtime connects
//! to (`registry-1.docker.io` for Docker Hub). Pure parsing: nothing here resolves or connects.

/// Docker Hub's name in normalised references (distribution `reference/normalize.go`).
pub const DOCKER_HUB: &str = "docker.io";
/// The host a runtime actually contacts for Docker Hub images.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host with optional port (`docker.io`, `127.0.0.1:5000`, `[::1]:5000`).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`, `team/app`).
    pub path: String,
    /// Tag as written, if any.
    pub tag: Option<String>,
    /// Digest (`sha256:…`) as written, if any.
    pub digest: Option<String>,
}

impl ImageRef {
    /// `Named.Name()`: domain and path, the string the kubelet's keyring is searched with.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag the kubelet pulls: as written, else `latest` unless a digest pins the image.
    pub fn effective_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t.as_str()),
            (None, Some(_)) => None,
            (None, None) => Some("latest"),
        }
    }

    /// The manifest reference of the registry API: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, self.effective_tag()) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The fully qualified reference a runtime reports (`docker.io/library/busybox:latest`).
    pub fn full(&self) -> String {
        let mut s = self.name();
        if let Some(t) = self.effective_tag() {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The `host[:port]` a runtime connects to.
    pub fn endpoint(&self) -> &str {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.domain
        }
    }
}

/// The error text of distribution's parser for every malformed reference we reject.
pub const INVALID_FORMAT: &str = "invalid reference format";

/// `reference.ParseNormalizedNamed`. Errors carry distribution's messages.
pub fn parse(image: &str) -> Result<ImageRef, String> {
    if image.is_empty() || image.contains(char::is_whitespace) {
        return Err(INVALID_FORMAT.into());
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d.to_string())),
        None => (image, None),
    };
    if let Some(d) = &digest
        && !valid_digest(d)
    {
        return Err(INVALID_FORMAT.into());
    }
    // The tag is after the last ':' that follows the last '/' (a port is not a tag).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(rest[last_slash + i + 1..].to_string()),
        ),
        None => (rest, None),
    };
    if let Some(t) = &tag
        && !valid_tag(t)
    {
        return Err(INVALID_FORMAT.into());
    }
    let (domain, path) = split_domain(name);
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    if !valid_domain(&domain) || path.split('/').any(|c| !valid_path_component(c)) {
        return Err(INVALID_FORMAT.into());
    }
    Ok(ImageRef {
        domain,
        path,
        tag,
        digest,
    })
}

/// distribution's `splitDockerDomain`: the first component is a registry only if it looks like
/// one (has `.` or `:`, is `localhost`, or has upper case); Docker Hub names get `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = DOCKER_HUB.to_string();
    }
    if domain == DOCKER_HUB && !path.contains('/') {
        path = format!("library/{path}");
    }
    (domain, path)
}

fn valid_domain(d: &str) -> bool {
    if let Some(inner) = d.strip_prefix('[') {
        // [ipv6]:port
        return inner.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok()
                && (port.is_empty() || port.strip_prefix(':').is_some_and(valid_port))
        });
    }
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    port.is_none_or(valid_port)
        && !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    t.len() <= 128
        && t.chars().next().is_some_and(ok_char)
        && t.chars().all(|c| ok_char(c) || c == '.' || c == '-')
}

/// `algorithm:hex` with at least 32 hex characters.
fn valid_digest(d: &str) -> bool {
    d.split_once(':').is_some_and(|(alg, hex)| {
        !alg.is_empty()
            && alg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
            && hex.len() >= 32
            && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// Whether a registry host (without port) is a loopback address the simulated runtime may
/// contact: `localhost`, 127.0.0.0/8 or `[::1]`. Decided on the text alone, never by a lookup.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = host_of(host_port);
    if host == "localhost" {
        return true;
    }
    if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
        return v4.is_loopback();
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::Ipv6Addr>()
        .is_ok_and(|v6| v6.is_loopback())
}

/// The host part of `host[:port]` (brackets kept for IPv6).
pub fn host_of(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        return host_port.find(']').map_or(host_port, |i| &host_port[..=i]);
    }
    host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names_normalise() {
        let r = parse("busybox").expect("valid");
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.full(), "docker.io/library/busybox:latest");
        assert_eq!(r.endpoint(), "registry-1.docker.io");
        let r = parse("library/x:1").expect("valid");
        assert_eq!(r.full(), "docker.io/library/x:1");
        let r = parse("team/app").expect("valid");
        assert_eq!(r.name(), "docker.io/team/app");
        let r = parse("index.docker.io/team/app").expect("valid");
        assert_eq!(r.name(), "docker.io/team/app");
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        let r = parse("127.0.0.1:5000/team/app:v1").expect("valid");
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("v1"))
        );
        let r = parse("localhost:5000/app").expect("valid");
        assert_eq!(r.manifest_reference(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("quay.io/a/b@{d}")).expect("valid");
        assert_eq!(r.effective_tag(), None);
        assert_eq!(r.manifest_reference(), d);
        let r = parse("[::1]:5000/app:v2").expect("valid");
        assert_eq!(r.domain, "[::1]:5000");
        assert!(parse("UPPER/app").is_ok_and(|r| r.domain == "UPPER"));
        assert_eq!(
            parse("docker.io/Team/app").err().as_deref(),
            Some("repository name must be lowercase")
        );
        for bad in ["", "a b", "app:", "app:-x", "quay.io/a//b", "a@sha256:xyz"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_is_decided_on_the_text() {
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "registry-1.docker.io",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
