//! Budgets: the limits an edge puts on a performance, what has been spent against them, and the
//! stop condition (a [`Hook`]) that warns at 80% and stops at 100%.

use crate::event::{EventKind, Outcome};
use crate::hook::{Between, Control, Hook};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// Limits of one performance. `None` means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Most model calls (turns) the actor may take.
    pub max_turns: Option<u32>,
    /// Most input tokens, summed over every turn (cached ones included).
    pub max_input_tokens: Option<u64>,
    /// Most output tokens, summed over every turn.
    pub max_output_tokens: Option<u64>,
    /// Most the model calls may cost, in USD at the model's price.
    pub max_cost_usd: Option<f64>,
    /// Longest wall time the performance may take, across resumptions.
    pub timeout: Option<Duration>,
    /// Most prop calls the actor may make.
    pub max_tool_calls: Option<u32>,
}

/// Which budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// [`Budget::max_turns`].
    Turns,
    /// [`Budget::max_input_tokens`].
    InputTokens,
    /// [`Budget::max_output_tokens`].
    OutputTokens,
    /// [`Budget::max_cost_usd`].
    Cost,
    /// [`Budget::timeout`].
    Time,
    /// [`Budget::max_tool_calls`].
    ToolCalls,
}

impl BudgetKind {
    /// One line for the director saying this budget is spent: `used` of `limit`, in its unit.
    pub fn describe(self, used: f64, limit: f64) -> String {
        match self {
            BudgetKind::Turns => format!("turn budget spent: {used} of {limit} turns"),
            BudgetKind::InputTokens => format!("input-token budget spent: {used} of {limit}"),
            BudgetKind::OutputTokens => format!("output-token budget spent: {used} of {limit}"),
            BudgetKind::Cost => format!("cost budget spent: ${used:.4} of ${limit:.4}"),
            BudgetKind::Time => format!("time budget spent: {used:.1}s of {limit:.1}s"),
            BudgetKind::ToolCalls => format!("tool-call budget spent: {used} of {limit} calls"),
        }
    }
}

/// What a performance has spent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Model calls made.
    pub turns: u32,
    /// Input tokens over every turn, cached ones included.
    pub input_tokens: u64,
    /// Output tokens over every turn.
    pub output_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// What the model calls cost, in USD (0 when the model's price is unknown).
    pub cost_usd: f64,
    /// Prop calls made.
    #[serde(default)]
    pub tool_calls: u32,
    /// Wall time in milliseconds, across resumptions.
    pub elapsed_ms: u64,
}

impl Budget {
    /// Each limited budget with what was used and its limit.
    pub fn usage(&self, spent: &Spent) -> Vec<(BudgetKind, f64, f64)> {
        let mut out = Vec::new();
        if let Some(l) = self.max_turns {
            out.push((BudgetKind::Turns, spent.turns as f64, l as f64));
        }
        if let Some(l) = self.max_input_tokens {
            out.push((BudgetKind::InputTokens, spent.input_tokens as f64, l as f64));
        }
        if let Some(l) = self.max_output_tokens {
            out.push((
                BudgetKind::OutputTokens,
                spent.output_tokens as f64,
                l as f64,
            ));
        }
        if let Some(l) = self.max_cost_usd {
            out.push((BudgetKind::Cost, spent.cost_usd, l));
        }
        if let Some(l) = self.max_tool_calls {
            out.push((BudgetKind::ToolCalls, spent.tool_calls as f64, l as f64));
        }
        if let Some(l) = self.timeout {
            out.push((
                BudgetKind::Time,
                spent.elapsed_ms as f64 / 1000.0,
                l.as_secs_f64(),
            ));
        }
        out
    }
}

impl Budget {
    /// The end a performance that spent `spent` comes to: stopped by the first budget reached,
    /// or `None` while every one has room. The one place a budget is judged spent.
    pub fn exhausted(&self, spent: &Spent) -> Option<crate::Ended> {
        self.usage(spent)
            .into_iter()
            .find(|(_, used, limit)| used >= limit)
            .map(|(kind, used, limit)| {
                crate::Ended::new(Outcome::Stopped, kind.describe(used, limit))
                    .with_budget(Some(kind))
            })
    }
}

/// The stop condition that enforces a [`Budget`] before every model call.
pub struct BudgetHook {
    budget: Budget,
    warned: Mutex<Vec<BudgetKind>>,
}

impl BudgetHook {
    /// A hook enforcing `budget`; add it to the performance with the other hooks.
    pub fn new(budget: Budget) -> Self {
        BudgetHook {
            budget,
            warned: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Hook for BudgetHook {
    async fn between_turns(&self, at: &mut Between<'_>) -> Control {
        if let Some(ended) = self.budget.exhausted(at.spent) {
            return Control::Stop {
                outcome: ended.outcome,
                reason: ended.reason,
                budget: ended.budget,
            };
        }
        for (kind, used, limit) in self.budget.usage(at.spent) {
            if used >= 0.8 * limit {
                // Poisoning only happens if another hook call panicked; a warning is not worth
                // a second panic, so a poisoned list just means warning again.
                let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
                if !warned.contains(&kind) {
                    warned.push(kind);
                    at.events.push(EventKind::BudgetWarning {
                        budget: kind,
                        used,
                        limit,
                    });
                }
            }
        }
        Control::Continue
    }
}
