//! Test support: ES256 JSON Web Tokens signed with a fresh P-256 key (rcgen, aws-lc-rs), and the
//! self-signed certificate of that key. Used as a cluster's service-account token issuer and as
//! a registry token server's signing key.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{CertificateParams, KeyPair, SigningKey as _};
use serde_json::{Value, json};

/// A signing key and its self-signed certificate.
pub struct Signer {
    key: KeyPair,
    /// The certificate, PEM (a registry's `rootcertbundle`).
    pub cert_pem: String,
    cert_der: Vec<u8>,
}

impl Signer {
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("P-256 key");
        let mut params = CertificateParams::new(vec![common_name.to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&key).expect("self-signed certificate");
        Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        }
    }

    /// `header` fields beside `alg`/`typ` (e.g. `x5c`, `kid`) and the claims, signed ES256.
    pub fn sign(&self, header: Value, claims: &Value) -> String {
        let mut full = json!({ "alg": "ES256", "typ": "JWT" });
        if let (Some(full), Value::Object(extra)) = (full.as_object_mut(), header) {
            full.extend(extra);
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(full.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let der = self
            .key
            .sign(signing_input.as_bytes())
            .expect("ES256 signature");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(fixed_from_der(&der))
        )
    }

    /// The `x5c` header value: this key's certificate chain (the certificate alone).
    pub fn x5c(&self) -> Value {
        json!([STANDARD.encode(&self.cert_der)])
    }
}

/// An ECDSA signature as JWS wants it (`r || s`, 32 bytes each) from ASN.1 DER
/// (`SEQUENCE { INTEGER r, INTEGER s }`).
fn fixed_from_der(der: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(bytes[0], 0x02, "DER INTEGER");
        let len = usize::from(bytes[1]);
        (&bytes[2..2 + len], &bytes[2 + len..])
    }
    assert_eq!(der[0], 0x30, "DER SEQUENCE");
    // P-256 signatures are under 128 bytes: one length byte.
    let body = &der[2..];
    let (r, rest) = integer(body);
    let (s, _) = integer(rest);
    let mut out = Vec::with_capacity(64);
    for part in [r, s] {
        let trimmed: &[u8] = &part[part.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - trimmed.len()));
        out.extend_from_slice(trimmed);
    }
    out
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
