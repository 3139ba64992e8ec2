//! What a door keeps in the store between firings — when it was first opened
//! ([`crate::timed::SINCE`]), its failures' backoff ([`crate::timed::BACKOFF`]), its probes'
//! last outputs ([`crate::probe::SCOPE`]), a webhook's delivery claims — under its stage and its
//! name ([`key`]), so stages sharing a store each keep their own for doors of one name: one
//! stage's probe result, backoff or delivery is never another's.
//!
//! A value kept before the stage was in the key sits under the door's name alone (a door name
//! is letters, digits, `-` and `_`, so no new key is one). The first stage to read it while it
//! has neither a value nor a firing of its own for the door adopts it ([`get`]): copies it to
//! its own key and leaves [`ADOPTED`] in its place, so an upgraded door keeps its catch-up
//! window, its backoff and its probes' baseline, and a stage known by another key later (its
//! file given a `[stage] name`) starts afresh rather than from the window before the upgrade,
//! which would perform again every due time its old key fired since. A stage whose door has
//! fired under its own key is past its upgrade and never adopts. Of two stages upgraded at once
//! with a door of one name, the one whose marker is written first adopts: it is written only
//! over the version of the value read ([`Store::put_if`]) and holds the value, so any daemon of
//! that stage copies it, and the log says which stage took it; a timed door's backoff and
//! baseline go only to the stage that took its window, so one stage keeps all three (a chat or
//! email door's records are not tied to a window). An `improv door status`
//! only reads ([`peek`]).

use crate::timed::{BACKOFF, SINCE};
use improv_store::{StageKey, Store, StoreError};
use serde_json::Value;

/// The store key of `stage`'s `name` (a door's name, or a record of it such as `DOOR/ID`) in
/// a kept scope. The stage comes last, after the first `@`: a name never holds one (door names
/// and ids are letters, digits, `-`, `_`; a webhook adds `/`, hex and `#N`), so each key is one
/// stage's one name, whatever its stage's path holds.
pub fn key(stage: &StageKey, name: &str) -> String {
    format!("{name}@{}", stage.id())
}

/// The field of what a value kept under a door's bare name is replaced with once a stage
/// adopted it (naming the stage), which no kept value has.
pub const ADOPTED: &str = "adopted_by";

/// The field of that marker holding the value adopted, so every daemon of the adopting stage
/// copies it, one that lost the race to the marker or one killed between the marker and the copy.
pub const ADOPTED_VALUE: &str = "value";

/// `stage`'s door's value in `scope`: its own, or else the one kept under the door's name
/// before stages were in the key, which it adopts (see the module doc).
pub async fn get(
    store: &dyn Store,
    scope: &str,
    stage: &StageKey,
    door: &str,
) -> Result<Option<Value>, StoreError> {
    let own = key(stage, door);
    if let Some(value) = store.get(scope, &own).await? {
        return Ok(Some(value));
    }
    let Some(before) = store.get_versioned(scope, door).await? else {
        return Ok(None);
    };
    let value = if before.value.get(ADOPTED).is_some() {
        adopted_by(&before.value, stage)
    } else if fired_under_its_own_key(store, stage, door).await?
        || !took_the_window(store, scope, stage, door).await?
    {
        None
    } else {
        // Written only over the version read: of two stages upgraded at once, one adopts.
        let marker = serde_json::json!({ ADOPTED: stage.id(), ADOPTED_VALUE: before.value });
        if store
            .put_if(scope, door, Some(before.version), &marker)
            .await?
        {
            tracing::info!(
                "door `{door}`: stage {} took the {scope} value kept before stages were in the key",
                stage.id()
            );
            Some(before.value)
        } else {
            // Another reader marked it first; another daemon of this stage copies it as well.
            let now = store.get(scope, door).await?;
            now.and_then(|marker| adopted_by(&marker, stage))
        }
    };
    if let Some(value) = value {
        // Only if absent, so a value the stage wrote meanwhile stays.
        store.put(scope, &own, &value, true).await?;
    }
    store.get(scope, &own).await
}

/// Whether `stage` may adopt its door's value in `scope`: a timed door's backoff and probes'
/// baseline go only to the stage that took its window ([`SINCE`]), so of two stages upgraded at
/// once one keeps all three (each scope adopted on its own, one could win the window and the
/// other the baseline). The window is read first when a timed door opens, so it is marked before
/// the others are read. Every other scope (the window itself, a chat or email door's records) is
/// not a timed door's: another stage's same-named timed door has no say in it.
async fn took_the_window(
    store: &dyn Store,
    scope: &str,
    stage: &StageKey,
    door: &str,
) -> Result<bool, StoreError> {
    if scope != BACKOFF && scope != crate::probe::SCOPE {
        return Ok(true);
    }
    Ok(match store.get(SINCE, door).await? {
        // Nothing kept before stages were in the key: no window to have taken.
        None => true,
        Some(window) => window.get(ADOPTED).and_then(Value::as_str) == Some(stage.id().as_str()),
    })
}

/// The value a marker left under a door's bare name holds, when `stage` adopted it.
pub fn adopted_by(marker: &Value, stage: &StageKey) -> Option<Value> {
    let by = marker.get(ADOPTED)?.as_str()?;
    (by == stage.id()).then(|| marker.get(ADOPTED_VALUE).cloned())?
}

/// The key no stage has (a stage's path is never empty): its firings are only those recorded
/// before stages were in the key, which every stage lists with its own.
pub(crate) fn no_stage() -> StageKey {
    StageKey {
        name: None,
        path: String::new(),
    }
}

/// Whether `stage`'s door has a firing of its own: its newest listed is not the newest of
/// those from before stages were in the key (a claim never takes a due time one of them holds,
/// and its own come after them).
async fn fired_under_its_own_key(
    store: &dyn Store,
    stage: &StageKey,
    door: &str,
) -> Result<bool, StoreError> {
    let newest = |firings: Vec<improv_store::Firing>| firings.first().map(|f| f.due);
    let listed = newest(store.firings(stage, door, 1).await?);
    Ok(listed.is_some() && listed != newest(store.firings(&no_stage(), door, 1).await?))
}

/// `stage`'s door's value in `scope` as [`get`] would read it, without adopting anything: its
/// own, or else the one kept under the door's name before stages were in the key while no
/// stage has adopted it. For readers that must not change what they read (`improv door status`
/// run from another checkout would otherwise take the running daemon's window for its key).
pub async fn peek(
    store: &dyn Store,
    scope: &str,
    stage: &StageKey,
    door: &str,
) -> Result<Option<Value>, StoreError> {
    if let Some(value) = store.get(scope, &key(stage, door)).await? {
        return Ok(Some(value));
    }
    let before = store.get(scope, door).await?;
    Ok(before.filter(|v| v.get(ADOPTED).is_none()))
}

/// Sets `stage`'s door's value in `scope` (with `only_if_absent`, only when the stage has
/// none of its own); returns whether it was set.
pub async fn put(
    store: &dyn Store,
    scope: &str,
    stage: &StageKey,
    door: &str,
    value: &Value,
    only_if_absent: bool,
) -> Result<bool, StoreError> {
    store
        .put(scope, &key(stage, door), value, only_if_absent)
        .await
}
