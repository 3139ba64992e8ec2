//! A throwaway PostgreSQL server for tests: `initdb` in a temporary folder, `pg_ctl` listening on
//! a Unix socket in that folder only (no TCP port, so tests never meet a server already on 5432),
//! stopped and deleted when dropped. The one place every crate's Postgres tests start a server.
//!
//! Without the PostgreSQL binaries it panics with the install command: a test that needs
//! Postgres fails clearly rather than skipping. When the test runs as root (initdb refuses root),
//! the server runs as the `postgres` user through `runuser`.
//!
//! Authentication: the `postgres` superuser is trusted on the socket; every other role must give
//! its password (scram-sha-256), so tests can check what a wrong password does.
#![allow(clippy::expect_used)] // a test fixture: failing loudly is its job

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

/// The port in the socket's file name (`.s.PGSQL.5432`); no TCP port is opened (except by
/// [`TempPostgres::start_new_tls`], on a free port of 127.0.0.1).
const PORT: u16 = 5432;

/// A PostgreSQL server in a temporary folder; stopped (immediately) and removed when dropped.
pub struct TempPostgres {
    bin: PathBuf,
    data: PathBuf,
    dir: TempDir,
    /// The socket's port, and the TCP port on 127.0.0.1 when `tcp`.
    port: u16,
    /// Listening on 127.0.0.1 too, with TLS on (`server.crt`/`server.key` in the data folder).
    tcp: bool,
}

impl TempPostgres {
    /// Creates a cluster and starts it. Panics, saying how to install PostgreSQL, when its
    /// binaries are missing, and with the server's output when it does not start.
    pub fn start_new() -> TempPostgres {
        let server = TempPostgres::create(PORT, false);
        server.start();
        server
    }

    /// Like [`TempPostgres::start_new`], and also listening on a free port of 127.0.0.1 with
    /// `ssl=on`, serving the certificate chain `cert_pem` and its key `key_pem` (the test makes
    /// them). Over TCP the `postgres` superuser is trusted and other roles give their password,
    /// with or without TLS (`host` lines), so a test can see which sessions are encrypted.
    pub fn start_new_tls(cert_pem: &str, key_pem: &str) -> TempPostgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port on 127.0.0.1")
            .port();
        let server = TempPostgres::create(port, true);
        server.write_private("server.crt", cert_pem);
        server.write_private("server.key", key_pem);
        let hba = "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let path = server.data.join("pg_hba.conf");
        let local = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{local}{hba}")).expect("write pg_hba.conf");
        server.start();
        server
    }

    /// Writes a file of the data folder as the server's user, readable by it alone (the
    /// server refuses a key others can read).
    fn write_private(&self, name: &str, text: &str) {
        use std::io::Write;
        let mut child = as_server_user(Path::new("sh"))
            .args(["-c", "umask 077 && cat > \"$1\"", "sh"])
            .arg(self.data.join(name))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run sh to write a server file");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())
            .expect("write a server file");
        let status = child.wait().expect("wait for sh");
        assert!(status.success(), "writing {name} failed");
    }

    /// The cluster, initialised and not started.
    fn create(port: u16, tcp: bool) -> TempPostgres {
        let bin = bindir();
        let dir = tempfile::Builder::new()
            .prefix("improv-pg-")
            .tempdir()
            .expect("create a temporary folder for PostgreSQL");
        // The server may run as another user (root's tests): it must reach its folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("open the temporary folder to the server's user");
        let data = dir.path().join("data");
        check(
            as_server_user(&bin.join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data)
                .output(),
            "initdb",
        );
        let hba = "local all postgres trust\nlocal all all scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let server = TempPostgres {
            bin,
            data,
            dir,
            port,
            tcp,
        };
        server.watch_owner();
        server
    }

    /// Starts a watchdog that, should this process die without dropping the server (killed by
    /// a timeout, SIGKILL), stops the server (SIGQUIT to the postmaster: an immediate stop) and
    /// removes its temporary folder, so a killed test leaves no server running. It runs in its
    /// own process group, out of reach of a signal sent to the test's group.
    fn watch_owner(&self) {
        use std::os::unix::process::CommandExt;
        let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -d "$2" ]; then
  pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null) && kill -QUIT "$pid" 2>/dev/null
  sleep 2; rm -rf -- "$2"
fi"#;
        let spawned = Command::new("sh")
            .args(["-c", script, "improv-pg-watchdog"])
            .arg(std::process::id().to_string())
            .arg(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        // Without sh the server is still stopped on drop; only a killed test would leak it.
        drop(spawned);
    }

    /// Starts the server again after [`TempPostgres::stop`] (waits until it accepts connections).
    /// `fsync=off` is safe here: an immediate stop kills the server, not the machine, so what
    /// it wrote is in the page cache. (`synchronous_commit=off` is not: a commit could be lost.)
    pub fn start(&self) {
        let listen = if self.tcp {
            "-c listen_addresses='127.0.0.1' -c ssl=on"
        } else {
            "-c listen_addresses=''"
        };
        let options = format!(
            "{listen} -c unix_socket_directories='{}' -p {} \
             -c fsync=off -c full_page_writes=off",
            self.socket_dir().display(),
            self.port
        );
        check(
            as_server_user(&self.bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-D"])
                .arg(&self.data)
                .args(["-o", &options, "-l"])
                .arg(self.dir.path().join("log"))
                .arg("start")
                .output(),
            "pg_ctl start",
        );
    }

    /// Stops the server at once (`-m immediate`: connections are cut, as when a database host
    /// dies); [`TempPostgres::start`] brings it back with its data.
    pub fn stop(&self) {
        check(self.pg_ctl_stop(), "pg_ctl stop");
    }

    fn pg_ctl_stop(&self) -> std::io::Result<Output> {
        as_server_user(&self.bin.join("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output()
    }

    /// The folder holding the server's socket (the `host` of its URLs).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The folder holding initdb, pg_ctl and psql.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The URL of database `db` as the `postgres` superuser, in the form tokio-postgres takes:
    /// `postgres://postgres@/DB?host=SOCKETDIR`.
    pub fn url(&self, db: &str) -> String {
        self.url_as("postgres", db)
    }

    /// The URL of database `db` as `user` (`user:password` for a role with a password).
    pub fn url_as(&self, user: &str, db: &str) -> String {
        format!(
            "postgres://{user}@/{db}?host={}&port={}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// The TCP port on 127.0.0.1 of a server from [`TempPostgres::start_new_tls`].
    pub fn tcp_port(&self) -> u16 {
        assert!(self.tcp, "this server listens on its socket only");
        self.port
    }

    /// Creates an empty database for one test and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs SQL with psql as the superuser in database `db`; returns its unaligned output.
    /// Panics with psql's message when the SQL fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_args(db, &["-c", sql])
    }

    /// Runs an SQL file with psql (`\copy` and other meta-commands work).
    pub fn psql_file(&self, db: &str, script: &Path) -> String {
        let script = script.to_string_lossy();
        self.psql_args(db, &["-f", &script])
    }

    fn psql_args(&self, db: &str, args: &[&str]) -> String {
        check(
            Command::new(self.bin.join("psql"))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U"])
                .args(["postgres", "-h"])
                .arg(self.socket_dir())
                .args(["-p", &self.port.to_string(), "-d", db])
                .args(args)
                .output(),
            "psql",
        )
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // Already stopped is fine; the folder goes with `dir`.
        let _ = self.pg_ctl_stop();
    }
}

/// The folder holding initdb, pg_ctl and psql: on PATH (often links into the versioned folder),
/// else the newest under /usr/lib/postgresql. Panics with the install command when none.
fn bindir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    let resolved = on_path.and_then(|dir| {
        let real = dir.join("initdb").canonicalize().ok()?;
        real.parent()
            .filter(|bin| bin.join("psql").is_file())
            .map(Path::to_path_buf)
    });
    let packaged = || {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        found.sort();
        found.pop()
    };
    resolved.or_else(packaged).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed, so this test cannot run (it never skips): install it \
             with `apt-get install -y postgresql` and run again"
        )
    })
}

/// A command run as the `postgres` user when the test runs as root (initdb refuses root).
fn as_server_user(program: &Path) -> Command {
    // `id -u` rather than an unsafe libc call.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn check(output: std::io::Result<Output>, what: &str) -> String {
    let output = output.unwrap_or_else(|e| panic!("{what} could not run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
