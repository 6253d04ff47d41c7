//! Test harness: a registry token server (distribution's token auth spec), the "SSO" host of a
//! delegated-auth registry, on its own loopback port. It checks HTTP Basic credentials against
//! its accounts and issues ES256 JWTs whose `x5c` header carries its certificate, which the
//! registry trusts through `rootcertbundle`. It records who asked, so tests can tell which
//! `auths` entry a client sent to the realm. Only 127.0.0.1 is ever contacted.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::jwt::{self, Signer};

/// One token request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The Basic username, `None` for an anonymous request.
    pub username: Option<String>,
    /// Whether the credentials matched an account.
    pub granted: bool,
    /// The `scope` parameters asked for.
    pub scopes: Vec<String>,
}

struct State {
    signer: Signer,
    service: String,
    issuer: String,
    accounts: BTreeMap<String, String>,
    requests: Mutex<Vec<TokenRequest>>,
    issued: AtomicU64,
}

/// A running token server; stopped on drop.
pub struct TokenServer {
    /// `127.0.0.1:PORT`: the SSO host, as an `auths` key.
    pub host: String,
    /// The URL registries send clients to (`auth.token.realm`).
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// The signing certificate, PEM, for the registry's `rootcertbundle`.
    pub root_cert: PathBuf,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    /// Starts a server that grants every requested action to these `(username, password)`
    /// accounts and refuses any other credentials with 401.
    pub fn start(accounts: &[(&str, &str)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let host = listener.local_addr().expect("local address").to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let signer = Signer::new("pullsecretd test token issuer");
        let root_cert = dir.path().join("token-root.pem");
        std::fs::write(&root_cert, &signer.cert_pem).expect("root certificate");
        let state = Arc::new(State {
            signer,
            service: "pullsecretd-test-registry".to_string(),
            issuer: "pullsecretd-test-sso".to_string(),
            accounts: accounts
                .iter()
                .map(|(u, p)| ((*u).to_string(), (*p).to_string()))
                .collect(),
            requests: Mutex::new(Vec::new()),
            issued: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = serve(&state, stream);
                    }
                }
            })
        };
        Self {
            realm: format!("http://{host}/token"),
            host,
            service: state.service.clone(),
            issuer: state.issuer.clone(),
            root_cert,
            state,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Every token request so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    pub fn root_cert_path(&self) -> &Path {
        &self.root_cert
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.host);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request on `stream` and closes it.
fn serve(state: &State, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_string();
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value),
                "content-length" => content_length = value.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    if content_length > 0 {
        let mut body = vec![0; content_length.min(64 * 1024)];
        std::io::Read::read_exact(&mut reader, &mut body)?;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (code, body) = if method == "GET" && path == "/token" {
        token(state, query, authorization.as_deref())
    } else {
        // No OAuth2 POST flow: clients fall back to GET with Basic credentials.
        (
            404,
            json!({"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]}),
        )
    };
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let body = body.to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// `GET /token?service=…&scope=…`: a JWT granting the asked actions, or 401.
fn token(state: &State, query: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        if let Some(("scope", value)) = pair.split_once('=') {
            scopes.push(percent_decode(value));
        }
    }
    let credentials = authorization
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let username = credentials.as_ref().map(|(u, _)| u.clone());
    let granted = credentials
        .as_ref()
        .is_some_and(|(u, p)| state.accounts.get(u) == Some(p));
    state
        .requests
        .lock()
        .expect("requests lock")
        .push(TokenRequest {
            username: username.clone(),
            granted,
            scopes: scopes.clone(),
        });
    if credentials.is_some() && !granted {
        return (
            401,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]}),
        );
    }
    // Anonymous requests get a token that grants nothing, as public token servers do.
    let access: Vec<Value> = if granted {
        scopes
            .iter()
            .filter_map(|scope| access_entry(scope))
            .collect()
    } else {
        Vec::new()
    };
    let now = jwt::now();
    let serial = state.issued.fetch_add(1, Ordering::SeqCst);
    let claims = json!({
        "iss": state.issuer,
        "sub": username.unwrap_or_default(),
        "aud": state.service,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("token-{serial}"),
        "access": access,
    });
    let header = json!({ "x5c": state.signer.x5c() });
    let token = state.signer.sign(header, &claims);
    (
        200,
        json!({ "token": token, "access_token": token, "expires_in": 300 }),
    )
}

/// `repository:team/app:pull,push` → the claim's access entry.
fn access_entry(scope: &str) -> Option<Value> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some(json!({ "type": kind, "name": name, "actions": actions }))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
