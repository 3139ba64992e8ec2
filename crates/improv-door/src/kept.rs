//! What a door keeps in the store between firings — when it was first opened
//! ([`crate::timed::SINCE`]), its failures' backoff ([`crate::timed::BACKOFF`]), its probes'
//! last outputs ([`crate::probe::SCOPE`]), a webhook's delivery claims — under its stage and its
//! name ([`key`]), so stages sharing a store each keep their own for doors of one name: one
//! stage's probe result, backoff or delivery is never another's.
//!
//! A value kept before the stage was in the key sits under the door's name alone (a door name
//! is letters, digits, `-` and `_`, so no new key is one). It stays the door's under every
//! stage, as firings recorded before stages do ([`improv_store::Firing`]): [`get`] reads it while
//! the stage has none of its own, so an upgraded door keeps its catch-up window, its backoff
//! and its probes' baseline; the stage's first write puts its own beside it.

use improv_store::{StageKey, Store, StoreError};
use serde_json::Value;

/// The store key of `stage`'s `name` (a door's name, or a record of it such as `DOOR/ID`) in
/// a kept scope. The stage comes last, after the first `@`: a name never holds one (door names
/// and ids are letters, digits, `-`, `_`; a webhook adds `/`, hex and `#N`), so each key is one
/// stage's one name, whatever its stage's path holds.
pub fn key(stage: &StageKey, name: &str) -> String {
    format!("{name}@{}", stage.id())
}

/// `stage`'s door's value in `scope`: its own, or else the one kept under the door's name
/// before stages were in the key.
pub async fn get(
    store: &dyn Store,
    scope: &str,
    stage: &StageKey,
    door: &str,
) -> Result<Option<Value>, StoreError> {
    match store.get(scope, &key(stage, door)).await? {
        Some(own) => Ok(Some(own)),
        None => store.get(scope, door).await,
    }
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
