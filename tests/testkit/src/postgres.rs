//! Test harness: a private, throw-away PostgreSQL server for one test — the Debian package's
//! `initdb` and `postgres` (found under `/usr/lib/postgresql/*/bin`), a fresh cluster in a
//! temporary directory, listening on 127.0.0.1 and a free port only, with a password-protected
//! superuser (SCRAM) for OpenBao's database secrets engine to connect as. `psql` (Debian's
//! `postgresql-client`) is the client the tests log in with.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as CI does), the server runs
//! as the `postgres` account that the Debian `postgresql-common` package creates (the same
//! package that ships the binaries, so the account is there wherever they are); otherwise as the
//! current user. The server is stopped and its directory removed on drop.
//!
//! It must not: listen on anything but loopback, touch the machine's own PostgreSQL clusters
//! (`pg_ctlcluster` and friends are never used), put a password on a command line, or print one.
//! When a program is missing the tests FAIL (never skip): `scripts/test` installs them.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `postgresql-NN` packages put the server programs (`NN` is the major version).
const DEBIAN_BIN_ROOT: &str = "/usr/lib/postgresql";
/// The account Debian's `postgresql-common` creates; the server runs as it when we are root.
const SERVER_ACCOUNT: &str = "postgres";
/// The superuser OpenBao connects as.
pub const SUPERUSER: &str = "openbao_admin";
/// The database every login uses (initdb creates it).
pub const DATABASE: &str = "postgres";
/// How long the server gets to start accepting connections, and to stop.
const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A running private PostgreSQL server; stopped (then killed) on drop.
pub struct Postgres {
    /// The postmaster (a direct child: its uid is changed before exec, no `runuser` between).
    child: Option<Child>,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The superuser's password: random per server, only ever passed through `PGPASSWORD` or
    /// a 0600 file, never printed.
    superuser_password: String,
    /// `initdb`, `postgres`, `pg_isready` live here.
    bin: PathBuf,
    /// Holds `data/` (the cluster), the unix socket, and `server.log`.
    dir: tempfile::TempDir,
}

/// The account the server runs as when we are root.
#[derive(Clone, Copy)]
struct Account {
    /// Its uid: PostgreSQL refuses uid 0.
    uid: u32,
    /// Its primary gid (supplementary groups are dropped).
    gid: u32,
}

impl Postgres {
    /// Creates a cluster in a fresh temporary directory, starts the server on a free loopback
    /// port and waits until it accepts connections.
    pub fn start() -> Self {
        let bin = server_bin_dir();
        let account = server_account();
        let mut builder = tempfile::Builder::new();
        builder.prefix("pg-");
        let dir = match account {
            // The server account must reach the directory: $TMPDIR may be under root's home.
            Some(_) => builder.tempdir_in("/tmp"),
            None => builder.tempdir(),
        }
        .expect("temp dir");
        if let Some(account) = account {
            chown(dir.path(), account);
        }
        let mut postgres = Self {
            child: None,
            port: free_port(),
            superuser_password: random_password(),
            bin,
            dir,
        };
        postgres.init_cluster(account);
        postgres.spawn(account);
        postgres.wait_ready();
        postgres
    }

    /// The superuser's password, for OpenBao's connection config (never print it).
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// The DSN OpenBao's `postgresql-database-plugin` connects with: templated, so OpenBao fills
    /// in the username and password it holds. No TLS: loopback only, and the test cluster has
    /// no certificate.
    pub fn templated_connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{DATABASE}?sslmode=disable",
            self.port
        )
    }

    /// The server's own log (connections, authentication failures, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `initdb` as the server account: SCRAM passwords for local and TCP logins, the superuser's
    /// password from a 0600 file that is removed right after.
    fn init_cluster(&self, account: Option<Account>) {
        let pwfile = self.dir.path().join("superuser.pw");
        write_private(&pwfile, &self.superuser_password, account);
        let mut initdb = Command::new(self.bin.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(self.data_dir())
            .args(["--username", SUPERUSER])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"])
            // A test cluster: nothing to flush to disk for durability.
            .arg("--no-sync")
            .current_dir(self.dir.path());
        as_account(&mut initdb, account);
        let out = initdb
            .output()
            .expect("initdb runs (Debian package postgresql)");
        let _ = std::fs::remove_file(&pwfile);
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&mut self, account: Option<Account>) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("server.log");
        if let Some(account) = account {
            chown(&self.dir.path().join("server.log"), account);
        }
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.data_dir())
            // The unix socket goes into our directory, not /run/postgresql.
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string()])
            // listen_addresses: loopback only.
            .args(["-h", "127.0.0.1"])
            // Small and fast for a shared 2-core machine; durability is not needed.
            .args(["-c", "fsync=off", "-c", "max_connections=30"])
            .args(["-c", "shared_buffers=16MB", "-c", "log_connections=on"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        as_account(&mut postgres, account);
        self.child = Some(postgres.spawn().expect("postgres starts"));
    }

    /// Polls `pg_isready` (which reports "accepting connections" only once startup and recovery
    /// are done, unlike a bare TCP connect) until it says yes; fails early if the server exited.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("pg_isready runs");
            if ready.success() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "postgres exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections on 127.0.0.1:{} within {START_LIMIT:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one SQL command with `psql` as `user` over TCP to 127.0.0.1; the password goes
    /// through `PGPASSWORD`, never the command line. `-w`: never prompt, fail instead.
    pub fn psql(&self, user: &str, password: &str, sql: &str) -> Output {
        Command::new("psql")
            .args(["-X", "-w", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", DATABASE, "-c", sql])
            .env_remove("PGPASSFILE")
            .env_remove("PGSERVICE")
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGSSLMODE", "disable")
            .stdin(Stdio::null())
            .output()
            .expect("psql runs (Debian package postgresql-client)")
    }

    /// Whether `user` with `password` can log in and run a query right now.
    pub fn can_login(&self, user: &str, password: &str) -> bool {
        let out = self.psql(user, password, "SELECT 1");
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// A query as the superuser; panics unless it succeeds. Returns its unaligned output.
    pub fn query(&self, sql: &str) -> String {
        let out = self.psql(SUPERUSER, &self.superuser_password, sql);
        assert!(
            out.status.success(),
            "psql as {SUPERUSER}: {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether a role named `name` exists (`pg_roles`).
    pub fn role_exists(&self, name: &str) -> bool {
        let sql = format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = {}",
            sql_literal(name)
        );
        self.query(&sql) == "1"
    }

    /// The role's `VALID UNTIL` as PostgreSQL stores it (`rolvaliduntil`, as epoch seconds),
    /// `None` when the role has none or does not exist.
    pub fn role_valid_until(&self, name: &str) -> Option<i64> {
        let sql = format!(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = {}",
            sql_literal(name)
        );
        self.query(&sql).parse().ok()
    }

    /// Stops the server: SIGINT is PostgreSQL's "fast" shutdown (clients are disconnected,
    /// no waiting for them); SIGKILL if it has not exited within [`STOP_LIMIT`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest `/usr/lib/postgresql/NN/bin` holding `initdb` and `postgres`.
fn server_bin_dir() -> PathBuf {
    let versions = std::fs::read_dir(DEBIAN_BIN_ROOT).unwrap_or_else(|e| {
        panic!("no {DEBIAN_BIN_ROOT} ({e}): install the Debian package postgresql")
    });
    let mut candidates: Vec<(u32, PathBuf)> = versions
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((major, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no {DEBIAN_BIN_ROOT}/*/bin/postgres: install postgresql"))
}

/// `None` unless we are root; then the Debian `postgres` account from /etc/passwd.
fn server_account() -> Option<Account> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let account = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [name, _, uid, gid, ..] if *name == SERVER_ACCOUNT => Some(Account {
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
            }),
            _ => None,
        }
    });
    Some(account.unwrap_or_else(|| {
        panic!("running as root, but there is no {SERVER_ACCOUNT:?} account: install postgresql")
    }))
}

/// Runs `command` as `account` (std sets the gid, drops supplementary groups, then the uid,
/// between fork and exec), with the account-neutral environment PostgreSQL expects.
fn as_account(command: &mut Command, account: Option<Account>) {
    command.env_remove("PGDATA").env("LC_ALL", "C");
    if let Some(account) = account {
        command.uid(account.uid).gid(account.gid);
    }
}

fn chown(path: &Path, account: Account) {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Writes `content` to a new file readable only by its owner (`account`, if given).
fn write_private(path: &Path, content: &str, account: Option<Account>) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create a private file");
    file.write_all(content.as_bytes())
        .expect("write a private file");
    if let Some(account) = account {
        chown(path, account);
    }
}

/// 32 hex digits from the kernel's random source.
fn random_password() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    hex::encode(bytes)
}

/// `value` as an SQL string literal (single quotes doubled).
fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}
