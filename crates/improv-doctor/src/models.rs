//! Can this machine perform the stage? Each actor's model is set up the way a performance sets
//! it up, without loading it: the embedded model must be installed (in the model store, or at
//! its path), a hosted one needs its key, a compatible server its `base_url`, a script its
//! file; a model server at a loopback address (Ollama, a llama.cpp or vLLM server) must accept
//! a connection. Unlike the six questions, the answers depend on the machine, not only on the
//! stage file.

use crate::{Finding, Question, Severity};
#[cfg(feature = "embedded")]
use improv_local::LocalError;
use improv_stage::{ActorConfig, Stage};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a model server on this machine may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One finding per actor about its model, and one per loopback server that does not answer.
pub(crate) fn check(stage: &Stage) -> Vec<Finding> {
    let actors: &[ActorConfig] = if stage.actors.is_empty() {
        std::slice::from_ref(stage.lead())
    } else {
        &stage.actors
    };
    let mut found = Vec::new();
    for actor in actors {
        let (name, chosen) = match actor.model.as_deref() {
            Some(name) => (name, ""),
            None => (
                improv_perform::cast::default_model(),
                " (the default: the actor names no model)",
            ),
        };
        found.push(model(stage, actor, name, chosen));
        if let Some(f) = server(actor, name) {
            found.push(f);
        }
    }
    found
}

fn finding(severity: Severity, evidence: String, fix: Option<String>) -> Finding {
    Finding {
        question: Question::Capabilities,
        severity,
        evidence,
        fix,
    }
}

/// Whether `actor` can have its model `name`: set up as a performance would, but the embedded
/// model only looked up, not loaded.
fn model(stage: &Stage, actor: &ActorConfig, name: &str, chosen: &str) -> Finding {
    let who = &actor.name;
    #[cfg(feature = "embedded")]
    if name.starts_with("local/") {
        return match improv_local::locate(name) {
            Ok(path) => finding(
                Severity::Ok,
                format!(
                    "`{who}` performs with `{name}`{chosen}, installed at {}",
                    path.display()
                ),
                None,
            ),
            Err(e) => not_installed(who, name, chosen, &e),
        };
    }
    match improv_perform::cast::model(stage, actor, name) {
        Ok(_) => finding(
            Severity::Ok,
            format!("`{who}` performs with `{name}`{chosen}"),
            None,
        ),
        Err(e) => finding(
            Severity::Error,
            format!("`{who}`'s model `{name}`{chosen} cannot be set up"),
            // The model's own error says what to set (the key, base_url or script).
            Some(
                e.chain()
                    .find_map(|c| c.downcast_ref::<improv_models::ResolveError>())
                    .map_or_else(|| e.root_cause().to_string(), ToString::to_string),
            ),
        ),
    }
}

/// The embedded model `name` is not where a performance looks for it.
#[cfg(feature = "embedded")]
fn not_installed(who: &str, name: &str, chosen: &str, e: &LocalError) -> Finding {
    let (why, fix) = match e {
        LocalError::NotInStore { dir, stored, .. } => (
            if stored.is_empty() {
                format!("the model store {} is empty", dir.display())
            } else {
                format!(
                    "the model store {} has only {}",
                    dir.display(),
                    stored.join(", ")
                )
            },
            improv_local::store::FETCH_HINT.to_string(),
        ),
        LocalError::MissingFile { path } => (
            format!("{} does not exist", path.display()),
            improv_local::store::FETCH_HINT.to_string(),
        ),
        LocalError::NotGguf { path } => (
            format!("{} is not a GGUF model file", path.display()),
            improv_local::store::FETCH_HINT.to_string(),
        ),
        other => (
            other.to_string(),
            "`improv model list` shows the installed models".to_string(),
        ),
    };
    finding(
        Severity::Error,
        format!("`{who}`'s model `{name}`{chosen} is not installed: {why}"),
        Some(fix),
    )
}

/// A warning when `actor`'s model server is on this machine and nothing accepts connections
/// there. Servers elsewhere are not contacted: the doctor stays off the network.
fn server(actor: &ActorConfig, name: &str) -> Option<Finding> {
    let base = match (&actor.base_url, name.split_once('/')) {
        (Some(url), _) => url.as_str(),
        (None, Some(("ollama", _))) => improv_models::resolve::OLLAMA_BASE_URL,
        _ => return None,
    };
    let url = reqwest::Url::parse(base).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    let port = url.port_or_known_default()?;
    let answers = (host, port)
        .to_socket_addrs()
        .ok()?
        .any(|addr| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok());
    (!answers).then(|| {
        finding(
            Severity::Warning,
            format!(
                "nothing accepts connections at {base}, where `{}`'s model `{name}` is served",
                actor.name
            ),
            Some(if name.starts_with("ollama/") {
                "start Ollama (`ollama serve`) before the stage runs, or set base_url to where it listens".to_string()
            } else {
                "start the model server before the stage runs, or set base_url to where it listens".to_string()
            }),
        )
    })
}
