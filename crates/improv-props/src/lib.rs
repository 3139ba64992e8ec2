//! The core props an actor uses to work in its workspace: `read`, `write`, `edit`, `bash`, `grep`
//! and `find`. Every path they take is kept inside the workspace ([`workspace`]), every output is
//! capped, and every error tells the model what to do next.
//!
//! ```no_run
//! use improv_props::{prop, PropsConfig, CORE};
//! let config = PropsConfig::default();
//! let props: Vec<_> = CORE.iter().filter_map(|name| prop(name, &config)).collect();
//! assert_eq!(props.len(), 6);
//! ```

mod args;
mod bash;
mod edit;
pub mod output;
mod read;
mod search;
pub mod workspace;
mod write;

pub use bash::{Bash, DEFAULT_TIMEOUT, Running, Spawn, SpawnHook};
pub use edit::Edit;
pub use read::Read;
pub use search::{Find, Grep};
pub use write::Write;

use improv_kernel::{Prop, PropError, ToolSpec};
use std::sync::Arc;
use std::time::Duration;

/// The names of the core props, in the order they are best offered to a model.
pub const CORE: [&str; 6] = ["read", "write", "edit", "bash", "grep", "find"];

/// Limits of the core props.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropsConfig {
    /// The longest a `bash` call may run, whatever `timeout` it asks for. A call that names no
    /// timeout gets [`DEFAULT_TIMEOUT`] (120 s), or this when it is lower.
    pub bash_timeout: Duration,
    /// The most output `bash` hands back (head and tail kept), and `grep` stops at.
    pub max_output_bytes: usize,
    /// The most text one `read` call returns; the rest is a call with a later `offset` away.
    pub read_max_bytes: usize,
}

impl Default for PropsConfig {
    fn default() -> Self {
        PropsConfig {
            bash_timeout: Duration::from_secs(600),
            max_output_bytes: 30 * 1024,
            read_max_bytes: 50 * 1024,
        }
    }
}

/// The core prop called `name`, configured; `None` when no core prop has that name.
pub fn prop(name: &str, config: &PropsConfig) -> Option<Arc<dyn Prop>> {
    Some(match name {
        "read" => Arc::new(Read::new(config.read_max_bytes)),
        "write" => Arc::new(Write::new()),
        "edit" => Arc::new(Edit::new()),
        "bash" => Arc::new(Bash::new(config.bash_timeout, config.max_output_bytes)),
        "grep" => Arc::new(Grep::new(config.max_output_bytes)),
        "find" => Arc::new(Find::new()),
        _ => return None,
    })
}

/// A tool spec with an object schema of `properties`, `required` listing the required ones.
fn spec(
    name: &str,
    description: &str,
    properties: serde_json::Value,
    required: &[&str],
) -> ToolSpec {
    ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required,
        }),
    }
}

/// Runs filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PropError> + Send + 'static,
) -> Result<T, PropError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PropError::new(format!("the prop failed unexpectedly: {e}")))?
}

/// A path refused or not opened beneath the workspace, said about `shown` (the path as the model
/// sees it) so the model can act on it.
fn path_error(shown: &str, error: workspace::PathError) -> PropError {
    use workspace::PathError;
    match error {
        PathError::Io { source, .. } => io_error(shown, source),
        PathError::IsDir { .. } => {
            PropError::new(format!("`{shown}` is a directory; give a file path"))
        }
        other => other.into(),
    }
}

/// An I/O error on `shown` (a workspace-relative path), said so the model can act on it.
fn io_error(shown: &str, error: std::io::Error) -> PropError {
    use std::io::ErrorKind;
    PropError::new(match error.kind() {
        ErrorKind::NotFound => {
            format!("`{shown}` does not exist; use `find` to look for the file")
        }
        ErrorKind::PermissionDenied => format!("`{shown}`: permission denied"),
        _ => format!("`{shown}`: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use improv_kernel::PropContext;
    use std::path::Path;

    /// A workspace in a temp dir and the context a prop is called with.
    pub struct Stage {
        _dir: tempfile::TempDir,
        pub context: PropContext,
    }

    impl Stage {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().canonicalize().unwrap();
            Stage {
                _dir: dir,
                context: PropContext::new(root, "lead", "test"),
            }
        }

        pub fn root(&self) -> &Path {
            &self.context.workspace
        }

        pub fn bytes(&self, path: &str, bytes: &[u8]) {
            let path = self.root().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }

        pub fn file(&self, path: &str, text: &str) {
            self.bytes(path, text.as_bytes());
        }

        pub fn read(&self, path: &str) -> String {
            std::fs::read_to_string(self.root().join(path)).unwrap()
        }

        pub async fn call(
            &self,
            prop: &dyn Prop,
            arguments: serde_json::Value,
        ) -> Result<String, PropError> {
            prop.call(arguments, &self.context).await
        }
    }

    #[test]
    fn the_six_specs_fit_the_byte_budget() {
        let config = PropsConfig::default();
        let specs: Vec<ToolSpec> = CORE
            .iter()
            .map(|name| prop(name, &config).unwrap().spec().clone())
            .collect();
        let json = serde_json::to_string(&specs).unwrap();
        println!("the six core specs: {} bytes\n{json}", json.len());
        assert!(json.len() <= 1600, "{} bytes: {json}", json.len());
        for (spec, name) in specs.iter().zip(CORE) {
            assert_eq!(spec.name, name);
            assert!(!spec.description.contains('\n'));
        }
    }

    #[test]
    fn unknown_names_have_no_prop() {
        assert!(prop("fetch", &PropsConfig::default()).is_none());
    }

    #[tokio::test]
    async fn reads_run_together_and_writes_alone() {
        let config = PropsConfig::default();
        let access = |name| prop(name, &config).unwrap().access(&serde_json::json!({}));
        use improv_kernel::Access::{Read, Write};
        assert_eq!(CORE.map(access), [Read, Write, Write, Write, Read, Read]);
    }

    #[tokio::test]
    async fn an_edit_after_a_write_reads_back_through_read() {
        let stage = Stage::new();
        let config = PropsConfig::default();
        let call = |name: &'static str, args| {
            let prop = prop(name, &config).unwrap();
            let stage = &stage;
            async move { stage.call(prop.as_ref(), args).await }
        };
        call(
            "write",
            serde_json::json!({"path": "notes/a.md", "content": "alpha\nbeta\n"}),
        )
        .await
        .unwrap();
        call(
            "edit",
            serde_json::json!({"path": "notes/a.md", "old": "beta", "new": "gamma"}),
        )
        .await
        .unwrap();
        let out = call("read", serde_json::json!({"path": "notes/a.md"}))
            .await
            .unwrap();
        assert_eq!(out, "1\talpha\n2\tgamma\n");
        let out = call("bash", serde_json::json!({"command": "cat notes/a.md"}))
            .await
            .unwrap();
        assert_eq!(out, "alpha\ngamma\n");
    }
}
