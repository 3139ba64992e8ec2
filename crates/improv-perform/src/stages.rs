//! The stages a worker serves, by identity: a stage is known by its `[stage] name`, not by
//! where its folder sits, so a performance queued before a deploy moved or renamed the folder
//! (a new release directory, another mount point, another machine's checkout) opens from the
//! folder the worker was told about (`improv worker --stages DIR`). The path recorded at
//! enqueue is opened only when it still holds a stage of the same name, or when the
//! performance was queued before names were recorded.

use crate::error::PerformError;
use improv_stage::Stage;
use improv_store::{PerformanceRecord, Serving, StageKey};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where a worker finds the stages it performs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stages {
    /// Every performance in the store, each from the stage file it was queued with.
    #[default]
    Any,
    /// Only these stages' performances: the worker claims nothing else ([`Serving::Stages`]).
    Named(Vec<Served>),
}

/// One stage a worker serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// What it claims: the performances queued with the name its file gives, and those queued
    /// without a name from its stage file (canonical), as [`StageKey::holds`] says.
    pub key: StageKey,
    /// The stage file a performance queued with its name is opened from.
    pub file: PathBuf,
}

impl Stages {
    /// Loads each stage folder or file in `paths` to learn its identity. Refuses a path that
    /// holds no stage, and two stages of the same given name (the worker could not tell which
    /// one a performance of that name is). Stages whose files give no name are known by their
    /// paths: two folders named alike are two stages.
    pub fn find(paths: &[PathBuf]) -> Result<Stages, PerformError> {
        let mut served: Vec<Served> = Vec::new();
        for path in paths {
            let cannot = |e: &dyn std::fmt::Display| {
                PerformError::Stage(format!(
                    "--stages {}: no stage can be served from there: {e}",
                    path.display()
                ))
            };
            let stage = Stage::load(path).map_err(|e| cannot(&e))?;
            let file = stage.path.canonicalize().map_err(|e| cannot(&e))?;
            let key = StageKey {
                name: stage.stage.identity().map(Into::into),
                path: file.display().to_string(),
            };
            if let Some(name) = &key.name
                && let Some(first) = served.iter().find(|s| s.key.name.as_ref() == Some(name))
            {
                return Err(PerformError::Stage(format!(
                    "two of the stages to serve are named `{name}`: {} and {}; a performance \
                     names its stage by `[stage] name`, so give each stage its own name or \
                     serve one of them",
                    first.file.display(),
                    stage.path.display()
                )));
            }
            served.push(Served {
                key,
                file: stage.path,
            });
        }
        Ok(Stages::Named(served))
    }

    /// What this worker claims.
    pub fn serving(&self) -> Serving {
        match self {
            Stages::Any => Serving::Any,
            Stages::Named(served) => {
                Serving::Stages(served.iter().map(|s| s.key.clone()).collect())
            }
        }
    }

    /// The stage `record` is performed on: by its stage's name among the stages served, else
    /// from the path it was queued with when that still holds the stage of that name. A record
    /// without a name (its stage file gave none, or it was queued before names were recorded)
    /// opens from its path. The error names the stage, the places looked in and what to do.
    pub fn open(&self, record: &PerformanceRecord) -> Result<Stage, PerformError> {
        let recorded = Path::new(&record.stage);
        let Some(name) = &record.stage_name else {
            return Stage::load(recorded).map_err(|e| PerformError::Stage(e.to_string()));
        };
        let mut looked = String::new();
        if let Stages::Named(served) = self {
            if let Some(one) = served.iter().find(|s| s.key.name.as_ref() == Some(name)) {
                match Stage::load(&one.file) {
                    Ok(stage) if stage.stage.identity() == Some(name) => return Ok(stage),
                    Ok(stage) => {
                        let _ = write!(
                            looked,
                            "{} now holds {}; ",
                            one.file.display(),
                            said(&stage)
                        );
                    }
                    Err(e) => {
                        let _ = write!(looked, "{} does not load: {e}; ", one.file.display());
                    }
                }
            } else {
                let names: Vec<String> = served
                    .iter()
                    .map(|s| match &s.key.name {
                        Some(n) => format!("`{n}` at {}", s.file.display()),
                        None => format!("the unnamed stage at {}", s.file.display()),
                    })
                    .collect();
                let _ = write!(looked, "this worker serves {}; ", names.join(", "));
            }
        }
        match Stage::load(recorded) {
            Ok(stage) if stage.stage.identity() == Some(name) => return Ok(stage),
            Ok(stage) => {
                let _ = write!(
                    looked,
                    "{} (where it was queued from) holds {}",
                    recorded.display(),
                    said(&stage)
                );
            }
            Err(e) => {
                let _ = write!(
                    looked,
                    "{} (where it was queued from) does not load: {e}",
                    recorded.display()
                );
            }
        }
        Err(PerformError::Stage(format!(
            "stage `{name}` cannot be found: {looked}. Start a worker with `--stages DIR` \
             naming the folder that holds stage `{name}` now"
        )))
    }
}

/// Which stage a file holds, as an error says it.
fn said(stage: &Stage) -> String {
    match stage.stage.identity() {
        Some(name) => format!("stage `{name}`"),
        None => "a stage that gives no `[stage] name`".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use improv_store::State;

    fn stage(dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("stage.toml");
        std::fs::write(
            &file,
            format!("[stage]\nname = \"{name}\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\n"),
        )
        .unwrap();
        file
    }

    fn record(stage: &Path, name: Option<&str>) -> PerformanceRecord {
        PerformanceRecord {
            id: "p1".into(),
            stage: stage.display().to_string(),
            stage_name: name.map(Into::into),
            intent: "go".into(),
            model: None,
            origin: "cli".into(),
            budget: None,
            state: State::Leased,
            outcome: None,
            reason: String::new(),
            worker: None,
            epoch: 1,
            last_seq: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn two_stages_of_one_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        stage(&a, "shop");
        stage(&b, "shop");
        let err = Stages::find(&[a.clone(), b.clone()])
            .unwrap_err()
            .to_string();
        for said in [
            "named `shop`",
            "a/stage.toml",
            "b/stage.toml",
            "its own name",
        ] {
            assert!(err.contains(said), "{said:?} in {err}");
        }
    }

    #[test]
    fn a_stage_renamed_in_its_file_is_not_performed_under_its_old_name() {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served");
        stage(&served, "shop");
        let stages = Stages::find(std::slice::from_ref(&served)).unwrap();
        let file = served.join("stage.toml").canonicalize().unwrap();
        let key = StageKey {
            name: Some("shop".into()),
            path: file.display().to_string(),
        };
        assert_eq!(stages.serving(), Serving::Stages(vec![key]));
        let gone = dir.path().join("gone/stage.toml");
        assert!(stages.open(&record(&gone, Some("shop"))).is_ok());
        stage(&served, "pantry");
        let err = stages
            .open(&record(&gone, Some("shop")))
            .unwrap_err()
            .to_string();
        for said in [
            "stage `shop`",
            "now holds stage `pantry`",
            "does not load",
            "--stages",
        ] {
            assert!(err.contains(said), "{said:?} in {err}");
        }
    }

    #[test]
    fn stages_without_a_name_in_folders_named_alike_are_two_stages() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for release in ["a", "b"] {
            let folder = dir.path().join(release).join("current");
            std::fs::create_dir_all(&folder).unwrap();
            let file = folder.join("stage.toml");
            std::fs::write(
                &file,
                "[[actor]]\nname = \"lead\"\nmodel = \"scripted/s.json\"\n",
            )
            .unwrap();
            files.push(file.canonicalize().unwrap().display().to_string());
        }
        let stages =
            Stages::find(&[dir.path().join("a/current"), dir.path().join("b/current")]).unwrap();
        let keys = files
            .into_iter()
            .map(|path| StageKey { name: None, path })
            .collect();
        assert_eq!(stages.serving(), Serving::Stages(keys));
    }

    #[test]
    fn a_performance_queued_without_a_name_opens_from_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = stage(&dir.path().join("old"), "anything");
        let opened = Stages::Any.open(&record(&file, None)).unwrap();
        assert_eq!(opened.stage.name, "anything");
    }
}
