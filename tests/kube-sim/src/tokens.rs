//! Service-account tokens as kube-apiserver issues and authenticates them: the claims of
//! kubernetes/kubernetes `pkg/serviceaccount/claims.go` (`Claims`, `validator.Validate`), the
//! audience check of `pkg/serviceaccount/jwt.go` (`AuthenticateToken`) and the identity of
//! `staging/src/k8s.io/apiserver/pkg/authentication/serviceaccount/util.go` (`UserInfo`).
//!
//! A token is a compact ES256 JWT signed with a P-256 key made when the server starts. The
//! issuer keeps the claims of every token it signed under the token's SHA-256, so checking the
//! signature of a presented token is finding its digest here: a token signed elsewhere, or one
//! with any byte changed, is unknown. Whether a known token is still good is decided against the
//! store at each use: not expired, an audience in common with the request, the ServiceAccount
//! (same uid) and the bound Pod or Secret (same uid, not long deleted) still there.
//!
//! What this module must not do: keep, log or print token text (only digests are kept), or
//! touch HTTP. The TokenRequest endpoint is `token_request`; TokenReview and bearer
//! authentication call [`Issuer::review`].

use crate::UserInfo;
use crate::resources;
use crate::store::Store;
use crate::util::meta_str;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// The apiserver's own audience (`--api-audiences`, by default the issuer): tokens without it
/// are refused for API requests, and a TokenReview that names no audience asks for it.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// `--service-account-issuer`: the `iss` claim.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// `jwt.DefaultLeeway` of go-jose: a bound object deleted less than this long ago still counts.
const LEEWAY_SECS: u64 = 60;

/// A name and uid in the `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `metadata.name` of the object.
    pub name: String,
    /// `metadata.uid` when the token was issued; a recreated object has another.
    pub uid: String,
}

/// What a token says, as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `kubernetes.io.namespace`.
    pub namespace: String,
    /// `kubernetes.io.serviceaccount`: the account the token authenticates as.
    pub service_account: ObjectRef,
    /// `kubernetes.io.pod`: the token dies with this pod.
    pub pod: Option<ObjectRef>,
    /// `kubernetes.io.secret`: the token dies with this Secret.
    pub secret: Option<ObjectRef>,
    /// `kubernetes.io.node.name`: the node of the bound pod (kube-sim has no Node objects, so
    /// never a node uid, as upstream when the Node is not found).
    pub node: Option<String>,
    /// `aud`.
    pub audiences: Vec<String>,
    /// `iat` and `nbf`, seconds since the epoch.
    pub issued_at: u64,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
    /// `kubernetes.io.warnafter` of extended projected-volume tokens.
    pub warn_after: Option<u64>,
    /// `jti`; `JTI=<jti>` is the identity's credential id.
    pub jti: String,
}

/// A token that passed review: who it is and for which of the requested audiences.
#[derive(Debug, Clone)]
pub struct Reviewed {
    /// The ServiceAccount identity, with `audiences` set to the token's.
    pub user: UserInfo,
    /// The requested audiences the token is valid for (`status.audiences` of a TokenReview).
    pub audiences: Vec<String>,
}

/// The cluster's service-account token signer and the digests of what it signed.
pub struct Issuer {
    /// The P-256 signing key (the apiserver's `--service-account-signing-key-file`).
    key: KeyPair,
    /// `kid` header: base64url of the SHA-256 of the public key's SubjectPublicKeyInfo, as the
    /// apiserver derives it.
    key_id: String,
    /// Claims of every token issued, by SHA-256 of the token text.
    issued: Mutex<HashMap<[u8; 32], Claims>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Issuer {
    /// A fresh signing key.
    pub fn new() -> Result<Self, String> {
        let key = KeyPair::generate().map_err(|e| format!("service-account signing key: {e}"))?;
        let key_id = URL_SAFE_NO_PAD.encode(Sha256::digest(key.subject_public_key_info()));
        Ok(Self {
            key,
            key_id,
            issued: Mutex::new(HashMap::new()),
        })
    }

    fn issued(&self) -> MutexGuard<'_, HashMap<[u8; 32], Claims>> {
        self.issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The public key (PEM), for verifiers that check signatures themselves.
    pub fn public_key_pem(&self) -> String {
        self.key.public_key_pem()
    }

    /// Signs `claims` into a compact JWS and remembers them.
    pub fn sign(&self, claims: Claims) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(jwt_claims(&claims).to_string())
        );
        let der = self
            .key
            .sign(signing_input.as_bytes())
            .map_err(|e| format!("failed to generate token: {e}"))?;
        let raw = fixed_from_der(&der)
            .ok_or_else(|| "failed to generate token: malformed signature".to_string())?;
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(raw));
        self.issued().insert(digest(&token), claims);
        Ok(token)
    }

    /// The claims of a token this issuer signed.
    pub fn claims_of(&self, token: &str) -> Option<Claims> {
        self.issued().get(&digest(token)).cloned()
    }

    /// Reviews `token` for `requested` audiences (empty: the API's own) against the store at
    /// `now`. None if this issuer never signed it; otherwise the identity or the
    /// authenticator's error text.
    pub fn review(
        &self,
        st: &Store,
        token: &str,
        requested: &[String],
        now: u64,
    ) -> Option<Result<Reviewed, String>> {
        let claims = self.claims_of(token)?;
        Some(validate(&claims, st, requested, now))
    }
}

/// The JWT payload: registered claims and the `kubernetes.io` private claim.
fn jwt_claims(c: &Claims) -> Value {
    let mut k8s = json!({
        "namespace": c.namespace,
        "serviceaccount": {"name": c.service_account.name, "uid": c.service_account.uid},
    });
    if let Some(p) = &c.pod {
        k8s["pod"] = json!({"name": p.name, "uid": p.uid});
    }
    if let Some(s) = &c.secret {
        k8s["secret"] = json!({"name": s.name, "uid": s.uid});
    }
    if let Some(n) = &c.node {
        k8s["node"] = json!({"name": n});
    }
    if let Some(w) = c.warn_after {
        k8s["warnafter"] = json!(w);
    }
    json!({
        "aud": c.audiences,
        "exp": c.expires,
        "iat": c.issued_at,
        "iss": ISSUER,
        "jti": c.jti,
        "kubernetes.io": k8s,
        "nbf": c.issued_at,
        "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.service_account.name),
    })
}

/// An ECDSA P-256 signature as JWS wants it (`r || s`, 32 bytes each) from ASN.1 DER
/// (`SEQUENCE { INTEGER r, INTEGER s }`).
fn fixed_from_der(der: &[u8]) -> Option<Vec<u8>> {
    fn integer(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
        if *bytes.first()? != 0x02 {
            return None;
        }
        let len = usize::from(*bytes.get(1)?);
        Some((bytes.get(2..2 + len)?, bytes.get(2 + len..)?))
    }
    if *der.first()? != 0x30 {
        return None;
    }
    // P-256 signatures are shorter than 128 bytes: a single length byte.
    let (r, rest) = integer(der.get(2..)?)?;
    let (s, _) = integer(rest)?;
    let mut out = Vec::with_capacity(64);
    for part in [r, s] {
        let trimmed = &part[part.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - trimmed.len()));
        out.extend_from_slice(trimmed);
    }
    Some(out)
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| crate::status::go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// `jwt.go` then `claims.go`: audiences first, then time, then the objects.
fn validate(c: &Claims, st: &Store, requested: &[String], now: u64) -> Result<Reviewed, String> {
    let requested: Vec<String> = if requested.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        requested.to_vec()
    };
    let audiences: Vec<String> = requested
        .iter()
        .filter(|a| c.audiences.contains(a))
        .cloned()
        .collect();
    if audiences.is_empty() {
        return Err(format!(
            "token audiences {} is invalid for the target audiences {}",
            go_quote_list(&c.audiences),
            go_quote_list(&requested)
        ));
    }
    if now > c.expires {
        return Err("service account token has expired".into());
    }
    if now < c.issued_at {
        return Err("service account token is not valid yet".into());
    }
    check_objects(c, st, now)?;
    Ok(Reviewed {
        user: identity(c),
        audiences,
    })
}

/// The ServiceAccount, Secret and Pod the token names must still be the ones it was issued for.
fn check_objects(c: &Claims, st: &Store, now: u64) -> Result<(), String> {
    let get = |plural: &str, name: &str| -> Option<Value> {
        let rt = resources::find("", "v1", plural, false)?;
        st.get(rt.key(), &c.namespace, name).cloned()
    };
    let deleted_long_ago = |obj: &Value| {
        obj.pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(crate::util::parse_rfc3339)
            .is_some_and(|t| t + LEEWAY_SECS < now)
    };
    let sa_name = &c.service_account.name;
    let Some(sa) = get("serviceaccounts", sa_name) else {
        return Err(format!("serviceaccounts {:?} not found", sa_name));
    };
    if deleted_long_ago(&sa) {
        return Err(format!(
            "service account {}/{sa_name} has been deleted",
            c.namespace
        ));
    }
    if meta_str(&sa, "uid") != c.service_account.uid {
        return Err(format!(
            "service account UID ({}) does not match claim ({})",
            meta_str(&sa, "uid"),
            c.service_account.uid
        ));
    }
    if let Some(s) = &c.secret {
        let secret = get("secrets", &s.name)
            .filter(|o| !deleted_long_ago(o))
            .ok_or_else(|| "service account token has been invalidated".to_string())?;
        if meta_str(&secret, "uid") != s.uid {
            return Err(format!(
                "secret UID ({}) does not match service account secret ref claim ({})",
                meta_str(&secret, "uid"),
                s.uid
            ));
        }
    }
    if let Some(p) = &c.pod {
        let pod = get("pods", &p.name)
            .filter(|o| !deleted_long_ago(o))
            .ok_or_else(|| "service account token has been invalidated".to_string())?;
        if meta_str(&pod, "uid") != p.uid {
            return Err(format!(
                "pod UID ({}) does not match service account pod ref claim ({})",
                meta_str(&pod, "uid"),
                p.uid
            ));
        }
    }
    Ok(())
}

/// `ServiceAccountInfo.UserInfo` plus the authenticated group the authenticator chain adds.
fn identity(c: &Claims) -> UserInfo {
    let mut extra: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(p) = &c.pod {
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![p.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![p.uid.clone()],
        );
    }
    extra.insert(
        "authentication.kubernetes.io/credential-id".into(),
        vec![format!("JTI={}", c.jti)],
    );
    if let Some(n) = &c.node {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            vec![n.clone()],
        );
    }
    UserInfo {
        username: format!(
            "system:serviceaccount:{}:{}",
            c.namespace, c.service_account.name
        ),
        uid: c.service_account.uid.clone(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", c.namespace),
            "system:authenticated".into(),
        ],
        extra,
        audiences: c.audiences.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: u64) -> Claims {
        Claims {
            namespace: "team".into(),
            service_account: ObjectRef {
                name: "app".into(),
                uid: "sa-uid".into(),
            },
            pod: None,
            secret: None,
            node: None,
            audiences: vec!["vault".into()],
            issued_at: now,
            expires: now + 600,
            warn_after: None,
            jti: "j".into(),
        }
    }

    fn store_with_sa(uid: &str) -> Store {
        let mut st = Store::new(100);
        if let Some(rt) = resources::find("", "v1", "serviceaccounts", false) {
            st.put(
                rt.key(),
                "team",
                "app",
                json!({"metadata": {"name": "app", "namespace": "team", "uid": uid}}),
                crate::store::EventType::Added,
            );
        }
        st
    }

    #[test]
    fn signed_tokens_are_compact_es256_jws_and_only_the_exact_text_is_known() {
        let issuer = Issuer::new().expect("key");
        let token = issuer.sign(claims(1000)).expect("signed");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[2]).expect("b64").len(),
            64,
            "r || s"
        );
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        assert_eq!(payload["sub"], "system:serviceaccount:team:app");
        assert_eq!(payload["kubernetes.io"]["serviceaccount"]["uid"], "sa-uid");
        assert!(issuer.claims_of(&token).is_some());
        let mut tampered = token.clone();
        tampered.push('A');
        assert!(issuer.claims_of(&tampered).is_none());
    }

    #[test]
    fn review_checks_audience_then_time_then_the_account() {
        let st = store_with_sa("sa-uid");
        let c = claims(1000);
        let ok = validate(&c, &st, &["vault".into(), "other".into()], 1001).expect("valid");
        assert_eq!(ok.audiences, ["vault"]);
        assert_eq!(ok.user.username, "system:serviceaccount:team:app");
        assert_eq!(ok.user.uid, "sa-uid");
        assert_eq!(
            validate(&c, &st, &[], 1001).err().as_deref(),
            Some(
                "token audiences [\"vault\"] is invalid for the target audiences [\"https://kubernetes.default.svc.cluster.local\"]"
            )
        );
        assert_eq!(
            validate(&c, &st, &["vault".into()], 1601).err().as_deref(),
            Some("service account token has expired")
        );
        let recreated = store_with_sa("other-uid");
        assert_eq!(
            validate(&c, &recreated, &["vault".into()], 1001)
                .err()
                .as_deref(),
            Some("service account UID (other-uid) does not match claim (sa-uid)")
        );
        let mut bound = c.clone();
        bound.pod = Some(ObjectRef {
            name: "gone".into(),
            uid: "p".into(),
        });
        assert_eq!(
            validate(&bound, &st, &["vault".into()], 1001)
                .err()
                .as_deref(),
            Some("service account token has been invalidated")
        );
    }
}
