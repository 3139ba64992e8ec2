//! `[[door]]`: the ways into a live stage — a cron schedule, a period (`every`), a webhook or a
//! chat channel — as written and as checked. The daemon that runs them is `improv-door`; the
//! channels' clients are `improv-channel`. Nothing here runs anything.

use crate::error::Problem;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;
use toml::Spanned;

mod email;
mod retention;
pub use email::{DEFAULT_THREAD_DAYS, EmailDoor, MailServer, MailTls, SenderCheck, loopback};
pub(crate) use retention::RawDoors;
pub use retention::{DEFAULT_KEEP_FOR, DoorRetention, MIN_KEEP_FOR, MIN_KEEP_LAST};

/// The URL path under which `improv serve` receives a webhook door's deliveries: `/doors/NAME`.
pub const WEBHOOK_PREFIX: &str = "/doors/";

/// `[[door]]`: one way into the stage; every firing is a performance of its own.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Door {
    /// Unique among the stage's doors; names its firings (`door:NAME`) and its webhook route.
    pub name: String,
    pub kind: DoorKind,
    /// What a firing performs; `{probe_diff}` is replaced by what the probes saw change. The
    /// stage's intent when the door gives none (a channel door's message is its intent).
    pub intent: Option<String>,
    /// Shell commands run in the stage's sandbox before any model; the door performs only when
    /// their output changed since its last firing.
    pub probes: Vec<String>,
    /// What a schedule does about firings it missed while no daemon ran.
    pub catch_up: CatchUp,
    /// `[door.edges]`: this door's budget, each limit overriding the stage's `[edges]` one.
    pub budget: DoorBudget,
    /// `rate = "30/min"`: how many deliveries or messages the door takes in a period, everyone
    /// together (webhook and channel doors; a timed door fires at its own pace). `None`: the
    /// taker's default.
    pub rate: Option<Rate>,
    /// `max_running = 4`: how many of the door's performances may run at once (webhook and
    /// channel doors; a timed door performs one firing at a time). `None`: the taker's default.
    pub max_running: Option<u32>,
}

/// `rate = "30/min"`: at most `count` in any `per`, as a token bucket: `count` at once, then one
/// more each `per / count`. Written `COUNT/UNIT` with UNIT one of `s`, `min`, `h`, `day` (or
/// `sec`, `second`, `minute`, `hour`), or `COUNT/DURATION` such as `"5/10s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The time one more is let in after the first `count`.
    pub fn refill(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

const RATE_HELP: &str = "write COUNT/UNIT, such as \"30/min\", \"10/s\", \"100/h\", \"500/day\", or \
                         COUNT/DURATION such as \"5/10s\"";

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let (count, per) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` has no `/` between a count and a period"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a whole number", count.trim()))?;
        if count == 0 {
            return Err("a rate of 0 lets nothing in".into());
        }
        let per = per.trim();
        let unit = match per {
            "s" | "sec" | "second" => Some(Duration::from_secs(1)),
            "min" | "minute" => Some(Duration::from_secs(60)),
            "h" | "hour" => Some(Duration::from_secs(3600)),
            "d" | "day" => Some(Duration::from_secs(86_400)),
            _ => None,
        };
        let per = match unit {
            Some(u) => u,
            None => humantime::parse_duration(per)
                .map_err(|_| format!("`{per}` is neither a unit nor a duration"))?,
        };
        if per.is_zero() {
            return Err("the period is zero".into());
        }
        Ok(Rate { count, per })
    }
}

/// What opens a door.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum DoorKind {
    /// `schedule = "0 8 * * MON-FRI"`: cron, in `timezone` (an IANA name such as
    /// "Europe/Paris"; the machine's local time when absent).
    Schedule {
        cron: String,
        timezone: Option<String>,
    },
    /// `every = "30m"`: due at every multiple of the period since the Unix epoch, so that every
    /// daemon agrees on the due times.
    Every(Duration),
    /// `webhook = "/doors/NAME"`: `POST` deliveries to `improv serve`, signed with HMAC-SHA256
    /// under the secret in the environment variable `secret_env`.
    Webhook { secret_env: String },
    /// `channel = "telegram"`…: a chat channel (see [`ChannelDoor`]).
    Channel(ChannelDoor),
}

impl DoorKind {
    /// The word for the kind, as `improv door status` shows it.
    pub fn word(&self) -> &'static str {
        match self {
            DoorKind::Schedule { .. } => "schedule",
            DoorKind::Every(_) => "every",
            DoorKind::Webhook { .. } => "webhook",
            DoorKind::Channel(_) => "channel",
        }
    }

    /// Whether the door fires on a clock (and so has due times, catch-up and probes).
    pub fn is_timed(&self) -> bool {
        matches!(self, DoorKind::Schedule { .. } | DoorKind::Every(_))
    }
}

/// A chat channel door's settings; `improv-channel` runs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelDoor {
    pub channel: Channel,
    /// The environment variable holding the bot's token (or the mailbox password).
    pub token_env: Option<String>,
    /// The environment variable holding the platform's signing secret (Slack, Discord).
    pub secret_env: Option<String>,
    /// Senders let in without pairing (`@alice`, an id, an address).
    pub allow: Vec<String>,
    /// Another endpoint than the platform's own (a local fake in tests, a proxy).
    pub api_base: Option<String>,
    /// `sender_rate = "10/min"`: how many messages one sender may send in a period. `None`: the
    /// channel's default.
    pub sender_rate: Option<Rate>,
    /// `send = ["C024BE91L"]`: other chats of this door's platform (their ids) the actors may
    /// post to with the `send` prop, besides the thread's own; empty: no `send` prop.
    pub send: Vec<String>,
    /// An email door's servers, login and address (`channel = "email"`); `None` on the others.
    pub email: Option<Box<EmailDoor>>,
}

/// The chat platforms a channel door speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Telegram,
    Slack,
    Discord,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Telegram,
        Channel::Slack,
        Channel::Discord,
        Channel::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Telegram => "telegram",
            Channel::Slack => "slack",
            Channel::Discord => "discord",
            Channel::Email => "email",
        }
    }
}

/// `catch_up`: what to do, after downtime, with the due times no daemon was there to fire. The
/// ones not performed are recorded as missed firings, never dropped silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Perform the latest missed firing once; record the others as missed.
    #[default]
    Latest,
    /// Perform every missed firing, oldest first.
    All,
    /// Perform none; record them all as missed.
    Skip,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
            CatchUp::Skip => "skip",
        }
    }
}

/// `[door.edges]`: limits for each firing of the door; `None` keeps the stage's `[edges]` one.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DoorBudget {
    pub max_turns: Option<u32>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub max_tool_calls: Option<u32>,
    pub timeout: Option<Duration>,
}

/// `[[door]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDoor {
    name: Option<Spanned<String>>,
    intent: Option<String>,
    schedule: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    catch_up: Option<Spanned<CatchUp>>,
    probe: Option<Spanned<Vec<String>>>,
    webhook: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    channel: Option<Spanned<Channel>>,
    token_env: Option<Spanned<String>>,
    allow: Option<Spanned<Vec<String>>>,
    api_base: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    max_running: Option<Spanned<u32>>,
    sender_rate: Option<Spanned<String>>,
    send: Option<Spanned<Vec<String>>>,
    imap: Option<Spanned<String>>,
    smtp: Option<Spanned<String>>,
    user_env: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    sender_check: Option<Spanned<String>>,
    authserv_id: Option<Spanned<String>>,
    thread_days: Option<Spanned<u32>>,
    edges: Option<RawDoorEdges>,
}

/// `[door.edges]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDoorEdges {
    max_turns: Option<Spanned<u32>>,
    max_input_tokens: Option<Spanned<u64>>,
    max_output_tokens: Option<Spanned<u64>>,
    max_cost_usd: Option<Spanned<f64>>,
    max_tool_calls: Option<Spanned<u32>>,
    timeout: Option<Spanned<String>>,
}

/// Parses a duration key, reporting its own problem (the stage checker's, shared).
pub(crate) type DurationKey<'a> =
    dyn FnMut(&mut Vec<Problem>, &str, Option<&Spanned<String>>) -> Option<Duration> + 'a;

const KIND_HELP: &str = "give the door exactly one of `schedule = \"0 8 * * *\"`, \
                         `every = \"30m\"`, `webhook = \"/doors/NAME\"` or `channel = \"telegram\"`";

/// Checks the doors; `duration` parses a duration key, reporting its own problem. A stage
/// intent stands in for a timed door's missing one.
pub(crate) fn build(
    raw: &[Spanned<RawDoor>],
    stage_intent: bool,
    problems: &mut Vec<Problem>,
    duration: &mut DurationKey,
) -> Vec<Door> {
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let mut doors = Vec::with_capacity(raw.len());
    for spanned in raw {
        let d = spanned.get_ref();
        let Some(name) = name(d, spanned.span(), &mut seen, problems) else {
            continue;
        };
        let Some(kind) = kind(d, &name, spanned.span(), problems, duration) else {
            continue;
        };
        misplaced(d, &kind, &name, problems);
        email::misplaced(d, &kind, &name, problems);
        if kind.is_timed() && d.intent.is_none() && !stage_intent {
            problems.push(
                Problem::new(
                    format!("door `{name}` has no `intent`, and the stage has none"),
                    spanned.span(),
                    "this door",
                )
                .help("add `intent = \"...\"`: what each firing should perform"),
            );
        }
        let budget = budget(d.edges.as_ref(), problems, duration);
        doors.push(Door {
            name,
            kind,
            intent: d.intent.clone().filter(|i| !i.trim().is_empty()),
            probes: d
                .probe
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_default(),
            catch_up: d
                .catch_up
                .as_ref()
                .map(|c| *c.get_ref())
                .unwrap_or_default(),
            budget,
            rate: rate(d.rate.as_ref(), "rate", problems),
            max_running: max_running(d.max_running.as_ref(), problems),
        });
    }
    doors
}

/// The door's name: required, plain (it is a URL segment and a store key), unique.
fn name(
    d: &RawDoor,
    span: Range<usize>,
    seen: &mut HashMap<String, Range<usize>>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let Some(n) = &d.name else {
        problems.push(
            Problem::new("a door has no `name`", span, "this door")
                .help("add `name = \"morning\"`: it names the door's firings and its webhook"),
        );
        return None;
    };
    let name = n.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.push(
            Problem::new(
                format!("door name `{name}` is not a plain name"),
                n.span(),
                "not a plain name",
            )
            .help("use letters, digits, `-` and `_` only: it is part of a URL and a store key"),
        );
        return None;
    }
    if let Some(first) = seen.get(name) {
        problems.push(
            Problem::new(
                format!("two doors are named `{name}`"),
                n.span(),
                "second door with this name",
            )
            .also(first.clone(), "first one")
            .help("give each door its own name"),
        );
        return None;
    }
    seen.insert(name.clone(), n.span());
    Some(name.clone())
}

/// What opens the door: exactly one of `schedule`, `every`, `webhook` and `channel`, checked.
fn kind(
    d: &RawDoor,
    name: &str,
    span: Range<usize>,
    problems: &mut Vec<Problem>,
    duration: &mut DurationKey,
) -> Option<DoorKind> {
    let given = [
        d.schedule.as_ref().map(|s| s.span()),
        d.every.as_ref().map(|s| s.span()),
        d.webhook.as_ref().map(|s| s.span()),
        d.channel.as_ref().map(|s| s.span()),
    ];
    let mut present = given.iter().flatten();
    let Some(_) = present.next() else {
        problems.push(
            Problem::new(
                format!("door `{name}` says nothing about what opens it"),
                span,
                "this door",
            )
            .help(KIND_HELP),
        );
        return None;
    };
    if let Some(second) = present.next() {
        problems.push(
            Problem::new(
                format!("door `{name}` has more than one way in"),
                second.clone(),
                "second one",
            )
            .help(format!("{KIND_HELP}; write another [[door]] for the other")),
        );
        return None;
    }
    if let Some(s) = &d.schedule {
        let tz = timezone(d.timezone.as_ref(), problems);
        return cron(s, problems).map(|cron| DoorKind::Schedule { cron, timezone: tz });
    }
    if let Some(e) = &d.every {
        return duration(problems, "every", Some(e)).map(DoorKind::Every);
    }
    if let Some(w) = &d.webhook {
        return webhook(d, name, w, problems);
    }
    d.channel.as_ref().map(|c| {
        DoorKind::Channel(ChannelDoor {
            channel: *c.get_ref(),
            token_env: d.token_env.as_ref().map(|v| v.get_ref().clone()),
            secret_env: d.secret_env.as_ref().map(|v| v.get_ref().clone()),
            allow: d
                .allow
                .as_ref()
                .map(|v| v.get_ref().clone())
                .unwrap_or_default(),
            api_base: d.api_base.as_ref().map(|v| v.get_ref().clone()),
            sender_rate: rate(d.sender_rate.as_ref(), "sender_rate", problems),
            send: d
                .send
                .as_ref()
                .map(|v| v.get_ref().clone())
                .unwrap_or_default(),
            email: email::settings(d, name, c, problems).map(Box::new),
        })
    })
}

/// A rate key (`rate`, `sender_rate`), checked.
fn rate(v: Option<&Spanned<String>>, key: &str, problems: &mut Vec<Problem>) -> Option<Rate> {
    let v = v?;
    match v.get_ref().parse() {
        Ok(rate) => Some(rate),
        Err(e) => {
            problems.push(
                Problem::new(
                    format!("`{key}` is not a rate: {e}"),
                    v.span(),
                    "not a rate",
                )
                .help(RATE_HELP),
            );
            None
        }
    }
}

fn max_running(v: Option<&Spanned<u32>>, problems: &mut Vec<Problem>) -> Option<u32> {
    let v = v?;
    if *v.get_ref() == 0 {
        problems.push(
            Problem::new("`max_running = 0` lets nothing run", v.span(), "here")
                .help("give the most performances of this door that may run at once, such as 4"),
        );
        return None;
    }
    Some(*v.get_ref())
}

fn cron(s: &Spanned<String>, problems: &mut Vec<Problem>) -> Option<String> {
    match croner::Cron::from_str(s.get_ref()) {
        Ok(_) => Some(s.get_ref().clone()),
        Err(e) => {
            problems.push(
                Problem::new(
                    format!("`schedule` is not a cron expression: {e}"),
                    s.span(),
                    "not cron",
                )
                .help(
                    "write five fields, minute hour day-of-month month day-of-week, such as \
                     \"0 8 * * MON-FRI\" (08:00 on weekdays) or \"*/15 * * * *\"",
                ),
            );
            None
        }
    }
}

fn timezone(tz: Option<&Spanned<String>>, problems: &mut Vec<Problem>) -> Option<String> {
    let tz = tz?;
    if tz.get_ref().parse::<chrono_tz::Tz>().is_err() {
        problems.push(
            Problem::new(
                format!("`timezone` \"{}\" is not a known time zone", tz.get_ref()),
                tz.span(),
                "unknown time zone",
            )
            .help("write an IANA name such as \"Europe/Paris\" or \"UTC\", or remove it for the machine's"),
        );
        return None;
    }
    Some(tz.get_ref().clone())
}

fn webhook(
    d: &RawDoor,
    name: &str,
    w: &Spanned<String>,
    problems: &mut Vec<Problem>,
) -> Option<DoorKind> {
    let route = format!("{WEBHOOK_PREFIX}{name}");
    if *w.get_ref() != route {
        problems.push(
            Problem::new(
                format!("door `{name}`'s webhook is `{}`", w.get_ref()),
                w.span(),
                "not this door's route",
            )
            .help(format!(
                "a webhook door is served at {WEBHOOK_PREFIX}NAME: write `webhook = \"{route}\"`"
            )),
        );
        return None;
    }
    let Some(secret) = &d.secret_env else {
        problems.push(
            Problem::new(
                format!("webhook door `{name}` has no `secret_env`"),
                w.span(),
                "unsigned webhook",
            )
            .help(
                "add `secret_env = \"VAR\"`: the environment variable holding the secret the \
                 sender signs deliveries with (X-Hub-Signature-256); unsigned deliveries are refused",
            ),
        );
        return None;
    };
    Some(DoorKind::Webhook {
        secret_env: secret.get_ref().clone(),
    })
}

/// Keys written on a door whose kind has no use for them: said, not ignored.
fn misplaced(d: &RawDoor, kind: &DoorKind, name: &str, problems: &mut Vec<Problem>) {
    let timed = kind.is_timed();
    let channel = matches!(kind, DoorKind::Channel(_));
    let webhook = matches!(kind, DoorKind::Webhook { .. });
    let keys: [(&str, Option<Range<usize>>, bool); 11] = [
        (
            "timezone",
            d.timezone.as_ref().map(|v| v.span()),
            matches!(kind, DoorKind::Schedule { .. }),
        ),
        ("catch_up", d.catch_up.as_ref().map(|v| v.span()), timed),
        ("probe", d.probe.as_ref().map(|v| v.span()), timed),
        (
            "secret_env",
            d.secret_env.as_ref().map(|v| v.span()),
            webhook || channel,
        ),
        ("token_env", d.token_env.as_ref().map(|v| v.span()), channel),
        ("allow", d.allow.as_ref().map(|v| v.span()), channel),
        ("api_base", d.api_base.as_ref().map(|v| v.span()), channel),
        (
            "rate",
            d.rate.as_ref().map(|v| v.span()),
            webhook || channel,
        ),
        (
            "max_running",
            d.max_running.as_ref().map(|v| v.span()),
            webhook || channel,
        ),
        (
            "sender_rate",
            d.sender_rate.as_ref().map(|v| v.span()),
            channel,
        ),
        ("send", d.send.as_ref().map(|v| v.span()), channel),
    ];
    for (key, span, fits) in keys {
        if let (Some(span), false) = (span, fits) {
            problems.push(
                Problem::new(
                    format!("`{key}` has no meaning on {} door `{name}`", kind.word()),
                    span,
                    "not for this kind of door",
                )
                .help(format!(
                    "remove `{key}`; it belongs to {}",
                    match key {
                        "timezone" => "a `schedule` door",
                        "catch_up" | "probe" => "a `schedule` or `every` door",
                        "secret_env" | "rate" | "max_running" =>
                            "a `webhook` or `channel` door (a timed door fires at its own pace, \
                             one firing at a time)",
                        _ => "a `channel` door",
                    }
                )),
            );
        }
    }
}

fn budget(
    e: Option<&RawDoorEdges>,
    problems: &mut Vec<Problem>,
    duration: &mut DurationKey,
) -> DoorBudget {
    let Some(e) = e else {
        return DoorBudget::default();
    };
    let zero = [
        (
            "max_turns",
            e.max_turns.as_ref().map(|v| (*v.get_ref() == 0, v.span())),
        ),
        (
            "max_input_tokens",
            e.max_input_tokens
                .as_ref()
                .map(|v| (*v.get_ref() == 0, v.span())),
        ),
        (
            "max_output_tokens",
            e.max_output_tokens
                .as_ref()
                .map(|v| (*v.get_ref() == 0, v.span())),
        ),
        (
            "max_tool_calls",
            e.max_tool_calls
                .as_ref()
                .map(|v| (*v.get_ref() == 0, v.span())),
        ),
        (
            "max_cost_usd",
            e.max_cost_usd
                .as_ref()
                .map(|v| (!v.get_ref().is_finite() || *v.get_ref() <= 0.0, v.span())),
        ),
    ];
    for (key, v) in zero {
        if let Some((true, span)) = v {
            problems.push(
                Problem::new(
                    format!("`{key}` under [door.edges] allows nothing"),
                    span,
                    "here",
                )
                .help(format!(
                    "give `{key}` a positive limit, or remove it to keep the stage's"
                )),
            );
        }
    }
    DoorBudget {
        max_turns: e.max_turns.as_ref().map(|v| *v.get_ref()),
        max_input_tokens: e.max_input_tokens.as_ref().map(|v| *v.get_ref()),
        max_output_tokens: e.max_output_tokens.as_ref().map(|v| *v.get_ref()),
        max_cost_usd: e.max_cost_usd.as_ref().map(|v| *v.get_ref()),
        max_tool_calls: e.max_tool_calls.as_ref().map(|v| *v.get_ref()),
        timeout: duration(problems, "timeout", e.timeout.as_ref()),
    }
}

impl DoorBudget {
    /// The budget of one firing: this door's limits, the stage's where the door sets none.
    pub fn over(&self, stage: improv_kernel::Budget) -> improv_kernel::Budget {
        improv_kernel::Budget {
            max_turns: self.max_turns.or(stage.max_turns),
            max_input_tokens: self.max_input_tokens.or(stage.max_input_tokens),
            max_output_tokens: self.max_output_tokens.or(stage.max_output_tokens),
            max_cost_usd: self.max_cost_usd.or(stage.max_cost_usd),
            timeout: self.timeout.or(stage.timeout),
            max_tool_calls: self.max_tool_calls.or(stage.max_tool_calls),
        }
    }
}
