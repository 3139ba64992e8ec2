//! One timed door (`schedule` or `every`) at work: each due time is claimed once in the store
//! (`Store::claim_firing`, keyed by stage, door and due time), so a restart or a second daemon
//! of the stage, here or on another machine, never performs it twice, and a door of the same
//! name on another stage sharing the store fires its own. Daemons of one stage meet only under
//! one key ([`crate::expiry::stage_key`]): one `[stage] name`, or, when the file gives none, one
//! canonical path, so copies of an unnamed stage at two paths (two hosts, a symlinked release
//! folder) each perform every due time (`improv serve` warns of it on a shared store). Due
//! times missed while no daemon ran are handled by `catch_up` and recorded as missed firings;
//! probes decide whether a model is needed at all; failures back off exponentially (capped) and
//! say so in the firing's note. What a door keeps between firings is its stage's too
//! ([`crate::kept`]).

use crate::context::DoorContext;
use crate::error::DoorError;
use crate::kept;
use crate::probe::{self, Seen};
use crate::schedule::{Timing, show};
use improv_kernel::Outcome;
use improv_stage::CatchUp;
use improv_store::{Firing, StageKey, UnixMillis};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How late a due time may be handled and still count as on time (not missed).
pub const GRACE_MS: i64 = 60_000;
/// The first backoff after a failure; it doubles with each failure in a row.
pub const BACKOFF_BASE_MS: i64 = 60_000;
/// The longest backoff.
pub const BACKOFF_CAP_MS: i64 = 3_600_000;

/// Store scope: when each door was first opened (the start of its catch-up window), per stage
/// ([`crate::kept`]).
pub const SINCE: &str = "door.since";
/// Store scope: each door's failures in a row and its backoff, per stage ([`crate::kept`]).
pub const BACKOFF: &str = "door.backoff";

/// The note of a firing claimed but not yet performed.
pub const CLAIMED: &str = "claimed";
/// The note of a firing whose performance is being started or performed.
pub const PERFORMING: &str = "performing";
/// How long after its due time a firing still not started is taken to be abandoned by a dead
/// daemon (a live one starts it within its probes' time), on top of the probes' timeout.
pub const ABANDONED_AFTER_MS: i64 = 5 * 60_000;
/// How many recent firings each tick looks through for abandoned ones.
pub(crate) const RETAKE_WINDOW: usize = 20;

/// A door's failures in a row, kept in the store so a restart keeps backing off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub failures: u32,
    /// No firing performs before this time.
    pub until: UnixMillis,
}

impl Backoff {
    fn after_failure(self, now: UnixMillis) -> Backoff {
        let failures = self.failures.saturating_add(1);
        let delay = BACKOFF_BASE_MS
            .saturating_mul(1i64 << failures.saturating_sub(1).min(32))
            .min(BACKOFF_CAP_MS);
        Backoff {
            failures,
            until: now.saturating_add(delay),
        }
    }
}

/// What one firing's work came to.
enum Performed {
    /// A performance ran; the note says how it ended.
    Ran(String),
    /// The probes saw nothing to perform.
    Idle(String),
    /// Another daemon started this firing's performance first.
    Lost,
}

/// A timed door, its place in time and its backoff.
pub struct Timed {
    ctx: DoorContext,
    /// Whose firings and kept values these are ([`DoorContext::stage_key`]).
    stage: StageKey,
    timing: Timing,
    /// The last due time handled (fired, missed or claimed by another).
    cursor: UnixMillis,
    backoff: Backoff,
}

impl Timed {
    /// Opens `ctx`'s door where the store says it left off; `None` for a door that is not timed.
    pub async fn open(ctx: DoorContext) -> Result<Option<Timed>, DoorError> {
        let Some(timing) = Timing::of(&ctx.door)? else {
            return Ok(None);
        };
        let (name, stage, store) = (&ctx.door.name, ctx.stage_key.clone(), ctx.store.as_ref());
        let now = ctx.clock.now();
        // Kept before stages were in the key, or now: a door upgraded keeps its window.
        let first = kept::get(store, SINCE, &stage, name).await?;
        let first = first.unwrap_or_else(|| serde_json::json!(now));
        kept::put(store, SINCE, &stage, name, &first, true).await?;
        let since = kept::get(store, SINCE, &stage, name)
            .await?
            .and_then(|v| v.as_i64())
            .unwrap_or(now);
        let last = store.firings(&stage, name, 1).await?.first().map(|f| f.due);
        let backoff = kept::get(store, BACKOFF, &stage, name)
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        // Adopted now, before any claim: once this stage has a firing of its own it adopts
        // nothing, and the first firing after the upgrade would take the probes' outputs it
        // reads as a first baseline, a change since the last firing before it performing nothing.
        if !ctx.door.probes.is_empty() {
            kept::get(store, probe::SCOPE, &stage, name).await?;
        }
        Ok(Some(Timed {
            cursor: last.map_or(since, |l| l.max(since)),
            stage,
            ctx,
            timing,
            backoff,
        }))
    }

    /// The next due time after the last one handled.
    pub fn next_due(&self) -> Option<UnixMillis> {
        self.timing.next_after(self.cursor)
    }

    /// Handles every due time up to now, then sleeps until the next, until `cancel`. A firing
    /// under way when `cancel` fires is finished first (SIGTERM drains).
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut errors = Backoff::default();
        loop {
            match self.tick().await {
                Ok(()) => errors = Backoff::default(),
                Err(e) => {
                    errors = errors.after_failure(self.ctx.clock.now());
                    tracing::warn!(
                        "door `{}`: {e}; trying again after {}",
                        self.ctx.door.name,
                        show(errors.until)
                    );
                }
            }
            let next = match self.next_due() {
                Some(next) if errors.failures == 0 => next,
                Some(next) => next.min(errors.until),
                None => errors.until.max(self.ctx.clock.now() + BACKOFF_CAP_MS),
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.ctx.clock.sleep_until(next) => {}
            }
        }
    }

    /// Handles every due time in (cursor, now]: claims each once and performs it, or records it
    /// as missed under `catch_up`.
    pub async fn tick(&mut self) -> Result<(), DoorError> {
        self.retake().await?;
        let now = self.ctx.clock.now();
        let (dues, left_out) = self.timing.dues(self.cursor, now);
        let last = dues.len().saturating_sub(1);
        for (i, due) in dues.into_iter().enumerate() {
            let late = now - due > GRACE_MS;
            let perform = match self.ctx.door.catch_up {
                CatchUp::All => true,
                CatchUp::Latest => i == last || !late,
                CatchUp::Skip => !late,
            };
            if perform {
                let id = improv_kernel::performance::new_id();
                if self.claim(due, Some(id.clone()), CLAIMED.into()).await?
                    && let Some((performance, note)) = self.fire(due, id).await
                {
                    self.update(due, performance, note).await?;
                }
            } else {
                let mut note = format!(
                    "missed: no daemon ran at its time (catch_up = {})",
                    self.ctx.door.catch_up.as_str()
                );
                if i == 0 && left_out > 0 {
                    note.push_str(&format!(
                        "; {left_out} earlier due times since {} were missed too",
                        show(self.cursor)
                    ));
                }
                self.claim(due, None, note).await?;
            }
            self.cursor = due;
        }
        Ok(())
    }

    /// Performs the firings a daemon claimed and died before starting (`kill -9` between the
    /// claim and the start). The performance keeps the id named at the claim, and the launcher
    /// starts an id once.
    async fn retake(&mut self) -> Result<(), DoorError> {
        let now = self.ctx.clock.now();
        let probes = self
            .ctx
            .stage
            .edges
            .tool_timeout
            .map_or(60_000, |t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
        let limit = ABANDONED_AFTER_MS.saturating_add(probes);
        let recent = self
            .ctx
            .store
            .firings(&self.stage, &self.ctx.door.name, RETAKE_WINDOW)
            .await?;
        // The due times of the firings recorded before stages were in the key, which every
        // stage lists: read once, when a firing looks abandoned.
        let mut before_stages = None;
        for f in recent.into_iter().rev() {
            let Some(id) = f.performance.clone() else {
                continue;
            };
            if now - f.due <= limit || (f.note != CLAIMED && f.note != PERFORMING) {
                continue;
            }
            if before_stages.is_none() {
                before_stages = Some(self.before_stages().await?);
            }
            let pre_upgrade = before_stages.as_ref().is_some_and(|d| d.contains(&f.due));
            if pre_upgrade && self.queued_elsewhere(&id).await? {
                continue;
            }
            if self.ctx.launcher.started(&self.ctx.stage, &id).await? {
                if f.note == CLAIMED {
                    let note =
                        format!("{PERFORMING} (started; the daemon that started it stopped)");
                    self.update(f.due, Some(id), note).await?;
                }
                continue;
            }
            if let Some((performance, note)) = self.fire(f.due, id).await {
                let note = format!("{note} (retaken: the daemon that claimed it stopped)");
                self.update(f.due, performance, note).await?;
            }
        }
        Ok(())
    }

    /// The due times of this door's firings recorded before stages were in the key, among the
    /// last [`RETAKE_WINDOW`].
    async fn before_stages(&self) -> Result<Vec<UnixMillis>, DoorError> {
        let (store, door) = (self.ctx.store.as_ref(), &self.ctx.door.name);
        let rows = store
            .firings(&kept::no_stage(), door, RETAKE_WINDOW)
            .await?;
        Ok(rows.into_iter().map(|f| f.due).collect())
    }

    /// Whether performance `id` is in the store as another stage's. A firing recorded before
    /// stages were in the key is listed by every stage: one whose performance was queued under
    /// a stage is left to it, so no other starts it with its own intent and rewrites the row.
    /// One never queued (killed between claim and launch; the local launcher writes no record
    /// before it starts) is retaken by whichever stage comes first, and the launcher's
    /// start-once-per-id fence keeps it to one performance.
    async fn queued_elsewhere(&self, id: &str) -> Result<bool, DoorError> {
        match self.ctx.store.performance(id).await {
            Ok(record) => Ok(!self.stage.holds(&record)),
            Err(improv_store::StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn claim(
        &self,
        due: UnixMillis,
        performance: Option<String>,
        note: String,
    ) -> Result<bool, DoorError> {
        Ok(self
            .ctx
            .store
            .claim_firing(
                &self.stage,
                &Firing {
                    door: self.ctx.door.name.clone(),
                    due,
                    performance,
                    note,
                },
            )
            .await?)
    }

    async fn update(
        &self,
        due: UnixMillis,
        performance: Option<String>,
        note: String,
    ) -> Result<(), DoorError> {
        Ok(self
            .ctx
            .store
            .update_firing(
                &self.stage,
                &Firing {
                    door: self.ctx.door.name.clone(),
                    due,
                    performance,
                    note,
                },
            )
            .await?)
    }

    /// Performs one claimed due time as performance `id`: what it started and the note saying
    /// how it went; `None` when another daemon started `id` first (the row is theirs).
    async fn fire(&mut self, due: UnixMillis, id: String) -> Option<(Option<String>, String)> {
        let now = self.ctx.clock.now();
        if now < self.backoff.until {
            let note = format!(
                "skipped: backing off after {} failures in a row, until {}",
                self.backoff.failures,
                show(self.backoff.until)
            );
            return Some((None, note));
        }
        let note = match self.perform(due, &id).await {
            Ok(Performed::Lost) => return None,
            Ok(Performed::Idle(note)) => return Some((None, note)),
            Ok(Performed::Ran(note)) => {
                if self.backoff.failures > 0 {
                    self.set_backoff(Backoff::default()).await;
                }
                note
            }
            Err(e) => {
                let backoff = self.backoff.after_failure(self.ctx.clock.now());
                self.set_backoff(backoff).await;
                format!(
                    "failed ({} in a row; next try after {}): {e}",
                    backoff.failures,
                    show(backoff.until)
                )
            }
        };
        Some((Some(id), note))
    }

    async fn set_backoff(&mut self, backoff: Backoff) {
        self.backoff = backoff;
        let value = serde_json::to_value(backoff).unwrap_or_default();
        let (store, door) = (self.ctx.store.as_ref(), &self.ctx.door.name);
        if let Err(e) = kept::put(store, BACKOFF, &self.stage, door, &value, false).await {
            tracing::warn!(
                "door `{}`: cannot keep its backoff: {e}",
                self.ctx.door.name
            );
        }
    }

    /// Runs the probes, and the performance when they saw a change (or there are none).
    async fn perform(&mut self, due: UnixMillis, id: &str) -> Result<Performed, DoorError> {
        let door = self.ctx.door.clone();
        let mut intent = door
            .intent
            .clone()
            .or_else(|| self.ctx.stage.stage.intent.clone())
            .unwrap_or_default();
        let mut seen_now = None;
        if !door.probes.is_empty() {
            let seen = probe::run(&self.ctx.stage, &door).await?;
            let store = self.ctx.store.as_ref();
            let before: Option<Vec<Seen>> = kept::get(store, probe::SCOPE, &self.stage, &door.name)
                .await?
                .and_then(|v| serde_json::from_value(v).ok());
            let Some(before) = before else {
                self.keep_probes(&seen).await?;
                return Ok(Performed::Idle(
                    "baseline: the probes' first outputs are kept; a change performs".into(),
                ));
            };
            let Some(diff) = probe::diff(&before, &seen) else {
                return Ok(Performed::Idle(
                    "no change: the probes printed what they printed last time".into(),
                ));
            };
            let fenced = crate::fence::untrusted("", "probes' change", &diff);
            intent = if intent.contains("{probe_diff}") {
                intent.replace("{probe_diff}", fenced.trim_start())
            } else {
                format!("{intent}{fenced}")
            };
            seen_now = Some(seen);
        }
        let mut request = self.ctx.request(intent);
        request.id = id.to_string();
        // The launcher starts an id once: a stalled daemon and one that retook its firing
        // cannot both perform it.
        let run = match self
            .ctx
            .launcher
            .start(self.ctx.stage.clone(), request)
            .await
        {
            Err(DoorError::AlreadyStarted { .. }) => return Ok(Performed::Lost),
            other => other?,
        };
        self.update(due, Some(id.to_string()), PERFORMING.into())
            .await?;
        if let Some(seen) = &seen_now {
            // The change is handed to a performance: the next firing compares with this.
            self.keep_probes(seen).await?;
        }
        let finished = run.done.await?;
        if finished.outcome == Outcome::Failed {
            return Err(DoorError::Launch {
                door: door.name.clone(),
                message: finished.reason,
            });
        }
        Ok(Performed::Ran(format!(
            "fired: {}",
            finished.outcome.as_str()
        )))
    }

    async fn keep_probes(&self, seen: &[Seen]) -> Result<(), DoorError> {
        let value = serde_json::to_value(seen).unwrap_or_default();
        let (store, door) = (self.ctx.store.as_ref(), &self.ctx.door.name);
        kept::put(store, probe::SCOPE, &self.stage, door, &value, false).await?;
        Ok(())
    }
}
