//! A firing's budget as the limits its performance runs under: the one place a door's budget
//! (`[door.edges]` over the stage's `[edges]`) replaces the stage's limits, whether the door's
//! daemon performs the firing itself, a chat door does, or a worker leased it from the store.

use improv_kernel::Budget;
use improv_stage::Stage;

/// `stage` with `b` as its `[edges]` limits.
pub fn within_budget(stage: &Stage, b: &Budget) -> Stage {
    let mut stage = stage.clone();
    let e = &mut stage.edges;
    e.max_turns = b.max_turns;
    e.max_input_tokens = b.max_input_tokens;
    e.max_output_tokens = b.max_output_tokens;
    e.max_cost_usd = b.max_cost_usd;
    e.max_tool_calls = b.max_tool_calls;
    e.timeout = b.timeout;
    stage
}
