//! The `write` prop: creates or replaces a whole file, atomically, beneath the workspace (a
//! temp file renamed into place; a symlink at the end is never written through).

use crate::workspace::Workspace;
use crate::{args, blocking, path_error, spec};
use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    path: String,
    content: String,
}

pub struct Write {
    spec: ToolSpec,
}

impl Write {
    pub fn new() -> Self {
        let spec = spec(
            "write",
            "Create or overwrite a file.",
            json!({"path": {"type": "string"}, "content": {"type": "string"}}),
            &["path", "content"],
        );
        Write { spec }
    }
}

impl Default for Write {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Prop for Write {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Write
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let args: Args = args::parse("write", arguments)?;
        let workspace = Workspace::new(&context.workspace)?;
        let shown = workspace
            .display(&workspace.resolve(&args.path)?)
            .into_owned();
        blocking(move || {
            let before = workspace
                .write(&args.path, args.content.as_bytes())
                .map_err(|e| path_error(&shown, e))?;
            let len = args.content.len();
            Ok(match before {
                None => format!("created `{shown}` ({len} bytes)"),
                Some(old) => format!("wrote `{shown}` ({len} bytes, was {old})"),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Stage;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn creates_files_and_their_folders() {
        let stage = Stage::new();
        let out = stage
            .call(
                &Write::new(),
                json!({"path": "a/b/c.txt", "content": "hi\n"}),
            )
            .await
            .unwrap();
        assert_eq!(out, "created `a/b/c.txt` (3 bytes)");
        assert_eq!(stage.read("a/b/c.txt"), "hi\n");
        let mode = std::fs::metadata(stage.root().join("a/b/c.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[tokio::test]
    async fn overwrites_keeping_permissions_and_leaves_no_temp_files() {
        let stage = Stage::new();
        stage.file("run.sh", "old");
        let path = stage.root().join("run.sh");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = stage
            .call(&Write::new(), json!({"path": "run.sh", "content": "new!"}))
            .await
            .unwrap();
        assert_eq!(out, "wrote `run.sh` (4 bytes, was 3)");
        assert_eq!(stage.read("run.sh"), "new!");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let names: Vec<_> = std::fs::read_dir(stage.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["run.sh"]);
    }

    #[tokio::test]
    async fn refuses_outside_paths_and_directories() {
        let stage = Stage::new();
        let err = stage
            .call(&Write::new(), json!({"path": "../x", "content": ""}))
            .await
            .unwrap_err();
        assert!(err.message().contains("outside the workspace"), "{err}");
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), stage.root().join("out")).unwrap();
        let err = stage
            .call(&Write::new(), json!({"path": "out/x", "content": "x"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("symlink"), "{err}");
        assert!(!outside.path().join("x").exists());
        stage.file("d/f", "");
        let err = stage
            .call(&Write::new(), json!({"path": "d", "content": "x"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("is a directory"), "{err}");
        let err = stage
            .call(&Write::new(), json!({"path": "a"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("missing field `content`"), "{err}");
    }
}
