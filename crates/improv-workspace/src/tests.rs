//! Every way out of a root folder, tried with `openat2` and with the walk that stands in for it.

use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};

const SECRET: &str = "OUTSIDE-SECRET-7f3a";

/// A base folder holding `ws` (the root) and `outside` (with `secret.txt`), and the workspace.
struct Fixture {
    _base: tempfile::TempDir,
    outside: PathBuf,
    ws: Workspace,
}

impl Fixture {
    fn new(method: Method) -> Self {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("ws")).unwrap();
        std::fs::create_dir(real.join("outside")).unwrap();
        std::fs::write(real.join("outside/secret.txt"), SECRET).unwrap();
        let ws = Workspace::with_method(&real.join("ws"), Scope::Workspace, method).unwrap();
        Fixture {
            _base: base,
            outside: real.join("outside"),
            ws,
        }
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.ws.root().join(rel)
    }
}

const METHODS: [Method; 2] = [Method::Openat2, Method::Walk];

/// Every way of reading `given` is refused as leading outside, and none returns the secret.
fn refused(f: &Fixture, given: &str) {
    let leaves = |r: Result<String, PathError>| match r {
        Err(e @ (PathError::Leaves { .. } | PathError::Loop { .. })) => e.to_string(),
        other => panic!("`{given}` was not refused: {other:?}"),
    };
    let err = leaves(f.ws.read_to_string(given, 1 << 20));
    assert!(err.contains(&format!("`{given}`")), "{err}");
    assert!(!err.contains(SECRET));
    leaves(f.ws.metadata(given).map(|_| String::new()));
    leaves(f.ws.open_read(given).map(|_| String::new()));
}

#[test]
fn parent_escapes_are_refused_before_any_open() {
    for method in METHODS {
        let f = Fixture::new(method);
        let err = f.ws.read("../outside/secret.txt", 100).unwrap_err();
        assert!(matches!(err, PathError::Outside { .. }), "{err:?}");
        assert!(err.to_string().contains("outside the workspace"), "{err}");
        assert!(f.ws.read("a/../../outside/secret.txt", 100).is_err());
        let abs = f.outside.join("secret.txt").display().to_string();
        assert!(matches!(
            f.ws.read(&abs, 100),
            Err(PathError::Outside { .. })
        ));
        assert!(matches!(f.ws.read("", 100), Err(PathError::Empty { .. })));
        assert!(f.ws.write("../x", b"x").is_err());
        assert!(!f.outside.join("x").exists());
    }
}

#[test]
fn an_absolute_symlink_that_leaves_is_refused() {
    for method in METHODS {
        let f = Fixture::new(method);
        symlink(&f.outside, f.at("d")).unwrap();
        symlink(f.outside.join("secret.txt"), f.at("s.txt")).unwrap();
        refused(&f, "d/secret.txt");
        refused(&f, "s.txt");
        let err = f.ws.read("s.txt", 100).unwrap_err().to_string();
        assert!(
            err.starts_with("`s.txt` leads outside the workspace through a symlink"),
            "{err}"
        );
    }
}

#[test]
fn a_relative_symlink_that_leaves_is_refused() {
    for method in METHODS {
        let f = Fixture::new(method);
        std::fs::create_dir(f.at("sub")).unwrap();
        symlink("../../outside", f.at("sub/up")).unwrap();
        symlink("../outside/secret.txt", f.at("s.txt")).unwrap();
        // A chain: an inside link to an inside link that leaves.
        symlink("sub/up", f.at("hop")).unwrap();
        refused(&f, "sub/up/secret.txt");
        refused(&f, "s.txt");
        refused(&f, "hop/secret.txt");
    }
}

#[test]
fn writing_through_a_symlink_that_leaves_never_creates_the_file_outside() {
    for method in METHODS {
        let f = Fixture::new(method);
        // Dangling links: the targets do not exist yet.
        symlink(f.outside.join("new.txt"), f.at("file.txt")).unwrap();
        symlink(f.outside.join("newdir"), f.at("d")).unwrap();
        symlink("../outside", f.at("rel")).unwrap();
        symlink(f.outside.join("secret.txt"), f.at("s.txt")).unwrap();
        for given in [
            "file.txt",
            "d/x.txt",
            "d/deeper/x.txt",
            "rel/x.txt",
            "s.txt",
        ] {
            let err = f.ws.write(given, b"pwned").unwrap_err();
            assert!(matches!(err, PathError::Leaves { .. }), "{given}: {err:?}");
        }
        assert!(!f.outside.join("new.txt").exists());
        assert!(!f.outside.join("newdir").exists());
        assert!(!f.outside.join("x.txt").exists());
        assert_eq!(
            std::fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
            SECRET
        );
    }
}

#[test]
fn proc_magic_links_are_refused() {
    for method in METHODS {
        let f = Fixture::new(method);
        // A link to /proc/self/root leaves by its absolute target.
        symlink("/proc/self/root", f.at("p")).unwrap();
        let through = format!("p{}", f.outside.join("secret.txt").display());
        refused(&f, &through);
        // A root whose own entries are magic links: /proc/self/fd/N points at an outside file.
        let held = File::open(f.outside.join("secret.txt")).unwrap();
        let proc = Workspace::with_method(Path::new("/proc/self"), Scope::Workspace, method);
        let proc = proc.unwrap();
        let given = format!("fd/{}", held.as_fd().as_raw_fd());
        match proc.read_to_string(&given, 100) {
            Err(PathError::Leaves { .. } | PathError::Loop { .. }) => {}
            other => panic!("{given} under /proc/self was not refused: {other:?}"),
        }
        match proc.read_to_string("cwd/Cargo.toml", 100) {
            Err(PathError::Leaves { .. } | PathError::Loop { .. }) => {}
            other => panic!("cwd under /proc/self was not refused: {other:?}"),
        }
    }
}

use std::os::fd::AsRawFd;

#[test]
fn symlinks_that_stay_inside_are_followed() {
    for method in METHODS {
        let f = Fixture::new(method);
        std::fs::create_dir_all(f.at("real/deep")).unwrap();
        std::fs::write(f.at("real/deep/f.txt"), "inside").unwrap();
        symlink("real", f.at("alias")).unwrap();
        symlink(f.at("real"), f.at("abs")).unwrap();
        symlink("../..", f.at("real/deep/up")).unwrap();
        for given in [
            "alias/deep/f.txt",
            "abs/deep/f.txt",
            "real/deep/up/real/deep/f.txt",
        ] {
            assert_eq!(
                f.ws.read_to_string(given, 100).unwrap(),
                "inside",
                "{given}"
            );
        }
        assert!(f.ws.metadata("abs").unwrap().is_dir());
        // Writes through inside links land inside.
        f.ws.write("alias/new.txt", b"one").unwrap();
        assert_eq!(std::fs::read(f.at("real/new.txt")).unwrap(), b"one");
        symlink("real/deep/f.txt", f.at("link.txt")).unwrap();
        assert_eq!(f.ws.write("link.txt", b"two").unwrap(), Some(6));
        assert_eq!(std::fs::read(f.at("real/deep/f.txt")).unwrap(), b"two");
        let link = std::fs::symlink_metadata(f.at("link.txt")).unwrap();
        assert!(link.file_type().is_symlink(), "the link itself stays");
        symlink(f.at("real/deep/f.txt"), f.at("abs.txt")).unwrap();
        f.ws.write("abs.txt", b"three").unwrap();
        assert_eq!(std::fs::read(f.at("real/deep/f.txt")).unwrap(), b"three");
    }
}

#[test]
fn symlink_loops_end_with_a_clear_error() {
    for method in METHODS {
        let f = Fixture::new(method);
        symlink("b", f.at("a")).unwrap();
        symlink("a", f.at("b")).unwrap();
        let err = f.ws.read("a", 10).unwrap_err();
        assert!(matches!(err, PathError::Loop { .. }), "{err:?}");
        let err = f.ws.write("a", b"x").unwrap_err();
        assert!(matches!(err, PathError::Loop { .. }), "{err:?}");
    }
}

#[test]
fn write_makes_folders_keeps_modes_and_leaves_no_temp_files() {
    for method in METHODS {
        let f = Fixture::new(method);
        assert_eq!(f.ws.write("a/b/c.txt", b"hi\n").unwrap(), None);
        assert_eq!(std::fs::read(f.at("a/b/c.txt")).unwrap(), b"hi\n");
        let mode = |p: &str| std::fs::metadata(f.at(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("a/b/c.txt"), 0o644);
        std::fs::set_permissions(f.at("a/b/c.txt"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        assert_eq!(f.ws.write("a/b/c.txt", b"again").unwrap(), Some(3));
        assert_eq!(mode("a/b/c.txt"), 0o755, "kept, setuid dropped");
        let names: Vec<_> = std::fs::read_dir(f.at("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.txt"]);
        assert!(matches!(
            f.ws.write("a", b"x"),
            Err(PathError::IsDir { .. })
        ));
        assert!(matches!(
            f.ws.write(".", b"x"),
            Err(PathError::IsDir { .. })
        ));
        std::fs::write(f.at("plain"), "").unwrap();
        let err = f.ws.write("plain/x", b"x").unwrap_err();
        assert!(matches!(err, PathError::Io { .. }), "{err:?}");
    }
}

#[test]
fn reads_say_what_is_missing_or_not_a_file() {
    let f = Fixture::new(Method::Openat2);
    let err = f.ws.read("nope.txt", 10).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(!f.ws.exists("nope.txt").unwrap());
    assert!(f.ws.exists(".").unwrap());
    std::fs::create_dir(f.at("dir")).unwrap();
    assert!(matches!(f.ws.read("dir", 10), Err(PathError::IsDir { .. })));
    std::fs::write(f.at("big.txt"), "0123456789").unwrap();
    assert_eq!(f.ws.read("big.txt", 4).unwrap(), b"0123");
    symlink(&f.outside, f.at("out")).unwrap();
    assert!(matches!(
        f.ws.exists("out/secret.txt"),
        Err(PathError::Leaves { .. })
    ));
}

#[test]
fn read_dir_lists_entries_without_following_them() {
    for method in METHODS {
        let f = Fixture::new(method);
        std::fs::create_dir(f.at("d")).unwrap();
        std::fs::write(f.at("f.txt"), "").unwrap();
        symlink(&f.outside, f.at("out")).unwrap();
        let mut entries = f.ws.read_dir(".").unwrap();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let got: Vec<(&OsStr, Kind)> = entries.iter().map(|e| (&*e.name, e.kind)).collect();
        assert_eq!(
            got,
            [
                (OsStr::new("d"), Kind::Dir),
                (OsStr::new("f.txt"), Kind::File),
                (OsStr::new("out"), Kind::Symlink)
            ]
        );
        assert!(matches!(
            f.ws.read_dir("out"),
            Err(PathError::Leaves { .. })
        ));
    }
}

#[test]
fn resolve_shows_real_paths_and_says_where_a_link_leads() {
    let f = Fixture::new(Method::Openat2);
    std::fs::create_dir(f.at("src")).unwrap();
    assert_eq!(f.ws.resolve("src/a.rs").unwrap(), f.at("src/a.rs"));
    assert_eq!(f.ws.resolve("./src/../b").unwrap(), f.at("b"));
    assert_eq!(f.ws.resolve(".").unwrap(), f.ws.root());
    assert_eq!(f.ws.display(&f.at("src/a.rs")), "src/a.rs");
    assert_eq!(f.ws.display(f.ws.root()), ".");
    symlink(&f.outside, f.at("out")).unwrap();
    let err = f.ws.resolve("out/secret.txt").unwrap_err().to_string();
    assert!(
        err.contains("symlink to") && err.contains("outside the workspace"),
        "{err}"
    );
    let stage = Workspace::scoped(f.ws.root(), Scope::StageFolder).unwrap();
    let err = stage.read("out/secret.txt", 10).unwrap_err().to_string();
    assert!(err.contains("outside the stage folder"), "{err}");
}
