//! The stages a worker serves, by identity: a stage is known by its `[stage] name`, not by
//! where its folder sits, so a performance queued before a deploy moved or renamed the folder
//! (a new release directory, another mount point, another machine's checkout) opens from the
//! folder the worker was told about (`improv worker --stages DIR`). The path recorded at
//! enqueue is opened only when it still holds a stage of the same name, or when the
//! performance was queued before names were recorded.

use crate::error::PerformError;
use improv_stage::Stage;
use improv_store::{PerformanceRecord, Serving};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where a worker finds the stages it performs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stages {
    /// Every performance in the store, each from the stage file it was queued with.
    #[default]
    Any,
    /// Only these stages' performances, each stage's name with the stage file to open: the
    /// worker claims nothing else ([`Serving::Stages`]).
    Named(BTreeMap<String, PathBuf>),
}

impl Stages {
    /// Loads each stage folder or file in `paths` to learn its name. Refuses a path that holds
    /// no stage, and two stages of the same name (the worker could not tell which one a
    /// performance of that name is).
    pub fn find(paths: &[PathBuf]) -> Result<Stages, PerformError> {
        let mut named: BTreeMap<String, PathBuf> = BTreeMap::new();
        for path in paths {
            let stage = Stage::load(path).map_err(|e| {
                PerformError::Stage(format!(
                    "--stages {}: no stage can be served from there: {e}",
                    path.display()
                ))
            })?;
            let name = stage.stage.name.clone();
            if let Some(first) = named.insert(name.clone(), stage.path.clone()) {
                return Err(PerformError::Stage(format!(
                    "two of the stages to serve are named `{name}`: {} and {}; a performance \
                     names its stage by `[stage] name`, so give each stage its own name or \
                     serve one of them",
                    first.display(),
                    stage.path.display()
                )));
            }
        }
        Ok(Stages::Named(named))
    }

    /// What this worker claims.
    pub fn serving(&self) -> Serving {
        match self {
            Stages::Any => Serving::Any,
            Stages::Named(named) => Serving::Stages(named.keys().cloned().collect()),
        }
    }

    /// The stage `record` is performed on: by its stage's name among the stages served, else
    /// from the path it was queued with when that still holds the stage of that name (or the
    /// record names none). The error names the stage, the places looked in and what to do.
    pub fn open(&self, record: &PerformanceRecord) -> Result<Stage, PerformError> {
        let recorded = Path::new(&record.stage);
        let Some(name) = &record.stage_name else {
            // Queued before stages were known by name: its path is all there is.
            return Stage::load(recorded).map_err(|e| PerformError::Stage(e.to_string()));
        };
        let mut looked = String::new();
        if let Stages::Named(named) = self {
            if let Some(file) = named.get(name) {
                match Stage::load(file) {
                    Ok(stage) if stage.stage.name == *name => return Ok(stage),
                    Ok(stage) => {
                        let _ = write!(
                            looked,
                            "{} now holds stage `{}`; ",
                            file.display(),
                            stage.stage.name
                        );
                    }
                    Err(e) => {
                        let _ = write!(looked, "{} does not load: {e}; ", file.display());
                    }
                }
            } else {
                let served: Vec<String> = named
                    .iter()
                    .map(|(n, f)| format!("`{n}` at {}", f.display()))
                    .collect();
                let _ = write!(looked, "this worker serves {}; ", served.join(", "));
            }
        }
        match Stage::load(recorded) {
            Ok(stage) if stage.stage.name == *name => return Ok(stage),
            Ok(stage) => {
                let _ = write!(
                    looked,
                    "{} (where it was queued from) holds stage `{}`",
                    recorded.display(),
                    stage.stage.name
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
        assert_eq!(stages.serving(), Serving::Stages(vec!["shop".into()]));
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
    fn a_performance_queued_without_a_name_opens_from_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = stage(&dir.path().join("old"), "anything");
        let opened = Stages::Any.open(&record(&file, None)).unwrap();
        assert_eq!(opened.stage.name, "anything");
    }
}
