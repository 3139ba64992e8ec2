//! The Postgres DDL of a settled collection against a real PostgreSQL server, started by the test
//! in a temporary folder (initdb, pg_ctl; a Unix socket only, no TCP port), with the 255 real
//! `package.json` records loaded and queried. Without the PostgreSQL binaries the test fails and
//! says how to install them: a silent pass would claim a check that did not run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::Shape;
use improv_ledger::schema::{Column, ColumnKind, columns, postgres_table};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/package-json.jsonl"
);

/// The folder holding initdb, pg_ctl and psql.
fn bindir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
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
    // initdb on PATH is often a link into the versioned folder that also holds psql.
    let resolved = on_path.and_then(|dir| {
        let real = dir.join("initdb").canonicalize().ok()?;
        real.parent().map(Path::to_path_buf)
    });
    resolved.or_else(packaged).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed, so the Postgres DDL was NOT checked: install it \
             (`apt-get install -y postgresql`) and run again"
        )
    })
}

/// A command run as an unprivileged user when the test runs as root (initdb refuses root).
fn as_server_user(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    if root.unwrap_or(false) {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn check(output: std::io::Result<Output>, what: &str) -> String {
    let output = output.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A server in a temporary folder, stopped when dropped.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let bin = bindir();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let data = dir.join("data");
        check(
            as_server_user(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(&data)
                .output(),
            "initdb",
        );
        let server = Server {
            bin,
            data,
            socket: dir.to_path_buf(),
        };
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p 5432",
            server.socket.display()
        );
        check(
            as_server_user(&server.bin.join("pg_ctl"))
                .args(["-w", "-t", "60", "-D"])
                .arg(&server.data)
                .args(["-o", &options, "-l"])
                .arg(dir.join("log"))
                .arg("start")
                .output(),
            "pg_ctl start",
        );
        server
    }

    fn psql(&self, script: &Path) -> String {
        check(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-U",
                    "postgres",
                    "-h",
                ])
                .arg(&self.socket)
                .args(["-p", "5432", "-d", "postgres", "-f"])
                .arg(script)
                .output(),
            "psql",
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

/// The SQL expression that reads a column's value out of the staged `doc`.
fn extract(column: &Column) -> String {
    let keys: Vec<String> = column
        .path
        .0
        .iter()
        .map(|segment| match segment {
            improv_ledger::path::Segment::Key(key) => {
                format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
            }
            other => panic!("a column inside an array: {other:?}"),
        })
        .collect();
    let path = format!("'{{{}}}'", keys.join(",").replace('\'', "''"));
    let cast = match column.kind {
        ColumnKind::Json(_) => return format!("doc #> {path}"),
        ColumnKind::Boolean => "boolean",
        ColumnKind::Integer => "bigint",
        ColumnKind::Real => "double precision",
        ColumnKind::Text => "text",
        ColumnKind::Date => "date",
        ColumnKind::DateTime => "timestamptz",
    };
    format!("(doc #>> {path})::{cast}")
}

#[test]
fn package_json_table_is_created_loaded_and_queried_in_postgres() {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let mut shape = Shape::default();
    for line in text.lines() {
        shape.absorb_json(line).unwrap();
    }
    let columns = columns(&shape);
    let ddl = postgres_table("packages", &columns);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let loaded: Vec<String> = columns.iter().map(extract).collect();
    let names: Vec<String> = columns
        .iter()
        .map(|c| improv_ledger::schema::quote_ident(&c.name))
        .collect();
    // CSV with quote and delimiter bytes that JSON text never holds, so each line is one value.
    let script = format!(
        "{ddl}
CREATE TEMP TABLE staging (n BIGSERIAL, doc JSONB);
\\copy staging (doc) FROM '{fixture}' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')
INSERT INTO packages (id, performance, actor, at, {names}, doc)
SELECT n, 'import', 'director', now(), {loaded}, doc FROM staging;
SELECT count(*), count(*) FILTER (WHERE scripts ? 'test'),
       count(DISTINCT jsonb_typeof(repository)), count(name)
FROM packages;
SELECT count(*) FROM information_schema.columns WHERE table_name = 'packages';
",
        fixture = FIXTURE,
        names = names.join(", "),
        loaded = loaded.join(", "),
    );
    let script_file = dir.path().join("load.sql");
    std::fs::write(&script_file, script).unwrap();
    let out = server.psql(&script_file);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let counts: Vec<i64> = lines[0].split('|').map(|n| n.parse().unwrap()).collect();
    assert_eq!(counts[0], 255, "{out}");
    assert!(counts[1] > 100, "packages with a test script: {out}");
    assert_eq!(counts[2], 2, "repository is a string or an object: {out}");
    assert_eq!(counts[3], 255, "name is never null: {out}");
    let width: usize = lines[1].parse().unwrap();
    assert_eq!(width, columns.len() + 5, "{out}");
    assert!(width < 100, "{width} columns");
    eprintln!("postgres: {width} columns, 255 rows loaded and queried");
}
