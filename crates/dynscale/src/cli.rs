//! The command line as clap sees it: every command, flag and help text. Values are
//! parsed into checked types here (addresses, URLs, versions, ids, JSON), once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::load::units::{parse_duration, parse_rate, parse_share};

const EXAMPLES: &str = "\
Example session:
  # Start a development node on 127.0.0.1:8470 (no authentication, loopback only),
  # keeping its state in ./dynscale-data:
  dynscale serve

  # In another terminal, check a policy document offline, then push it:
  dynscale policy validate tools-guard.yaml
  dynscale policy push tools-guard.yaml

  # Ask for decisions (exit code 0 = allow/warn, 2 = deny/quarantine/escalate):
  dynscale decide --agent a1 --action read --namespace tools.exec.eng.usa.acme
  dynscale decide --agent a1 --action shell --namespace tools.exec.eng.usa.acme

  # Stop one agent at once, then let it go again:
  dynscale kill --agent a1
  dynscale kill --release --agent a1

Commands that talk to a node take --url (or DYNSCALE_URL; default
http://127.0.0.1:8470). Exit codes: 0 success, 1 error, 2 a decision that was not
allow or warn.";

const DECIDE_EXIT: &str = "\
Exit codes: 0 when the outcome is allow or warn; 2 for any other outcome (deny,
quarantine, escalate); 1 when the decision could not be made (bad input, unknown
namespace, node unreachable).";

/// dynscale: a real-time policy decision node for fleets of AI agents.
///
/// Before an agent acts, it asks dynscale; dynscale answers allow, warn, deny,
/// throttle, quarantine or escalate from the policies pushed to it. This binary runs a node
/// (`serve`) and administers one (every other command).
#[derive(Debug, Parser)]
#[command(name = "dynscale", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: the decision API, policy administration and controls over HTTP.
    ///
    /// Settings come from defaults, then the TOML file (--config or DYNSCALE_CONFIG),
    /// then DYNSCALE_* environment variables, then flags; each overrides the one
    /// before. Without authentication the node runs in development mode and serves
    /// loopback addresses only. Ctrl-C or SIGTERM stops it gracefully. Logs go to
    /// stderr, filtered by DYNSCALE_LOG (default `info`, e.g. `DYNSCALE_LOG=debug`).
    Serve(ServeArgs),
    /// Validate, push, list, show and roll back policy documents.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask a node for one decision and print it.
    #[command(after_help = DECIDE_EXIT)]
    Decide(DecideArgs),
    /// Register an agent, show what the node knows of it, release it from quarantine.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// List, show, approve or deny actions waiting for a human.
    #[command(subcommand)]
    Escalation(EscalationCommand),
    /// Set, release or list kill switches (an agent, a pack, or everything).
    Kill(KillArgs),
    /// Print the node's change history (policies, kill switches, quarantines, agents).
    Events(EventsArgs),
    /// Read the verifiable audit log, get proofs, and verify logs and proofs offline.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Drive a node with open-loop load (a constant arrival rate) and report
    /// throughput, latency percentiles and outcomes; SLO flags set the exit code.
    #[command(after_help = LOADGEN_HELP)]
    Loadgen(LoadgenArgs),
    /// Measure this node's limit: rising open-loop load until p99 latency or errors
    /// break the objective; writes a scale report (JSON and Markdown) and records it
    /// on the node.
    #[command(after_help = CERTIFY_HELP)]
    Certify(CertifyArgs),
    /// The node's scale signals with their GREEN/YELLOW/ORANGE/RED levels, and its
    /// alerts.
    #[command(subcommand)]
    Scale(ScaleCommand),
    /// Follow and steer progressive rollouts (shadow, canary, blue-green) started by
    /// `policy push` of a document whose `activation.strategy` is not `immediate`.
    #[command(subcommand, after_help = ROLLOUT_HELP)]
    Rollout(RolloutCommand),
}

const ROLLOUT_HELP: &str = "\
A push with `activation: { strategy: canary }` (or shadow, blue-green) stores the new
version and rolls it out against the active one: agents are bucketed by a hash of
(rollout salt, agent id), so each sees one version and raising the share only adds
agents. The node compares the arms (evaluation errors, deny rate, and what agents
report with POST /v1/feedback: failures and latency) with anytime-valid tests, advances
step by step, promotes at the end, and rolls back on a regression or a hard trigger
(+5 points of errors, +200 ms latency). A first version of a policy has nothing to
compare with and is activated at once.

  dynscale policy push payments-guard-2.2.yaml    # activation: { strategy: canary }
  dynscale rollout status payments-guard          # share, samples, each test, next step
  dynscale rollout pause payments-guard           # hold the share (rollback still applies)
  dynscale rollout resume payments-guard
  dynscale rollout promote payments-guard         # make it final now
  dynscale rollout abort payments-guard           # back to the active version now";

/// `dynscale rollout …`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Every rollout (running, then the latest finished per policy), or one in
    /// detail: arm sizes, samples, each statistic against its threshold, each hard
    /// trigger against its limit, the next step and when; for shadow comparisons
    /// the decision diff (allow_to_deny, deny_to_allow).
    Status(RolloutStatusArgs),
    /// Make the candidate final now, skipping the remaining steps.
    Promote(RolloutNameArgs),
    /// Stop advancing; a regression still rolls back.
    Pause(RolloutNameArgs),
    /// Continue a paused rollout.
    Resume(RolloutNameArgs),
    /// Return to the active version now.
    Abort(RolloutNameArgs),
}

/// `dynscale rollout status`.
#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// The policy whose rollout to show [default: a table of every rollout].
    pub name: Option<String>,
    /// Print the node's JSON instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale rollout promote|pause|resume|abort`.
#[derive(Debug, Args)]
pub struct RolloutNameArgs {
    /// The policy being rolled out.
    pub name: String,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale scale …`.
#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// Each signal (concurrency, throughput, latency p99, audit queue, storage,
    /// time to full) with its value and level, decision latency percentiles and
    /// admission.
    Status(ScaleArgs),
    /// Alerts pending, firing or just resolved, with owner and response deadline.
    Alerts(ScaleArgs),
}

/// `dynscale scale status|alerts`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Print the node's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

const LOADGEN_HELP: &str = "\
How it sends: requests are due at a constant rate (--rps) from the start, whatever the
node does (open loop). --connections workers, each with one keep-alive HTTP/1.1
connection, send the next due request; latency is measured from when a request was
due, so a node that falls behind shows it as latency instead of slowing the generator.
With --batch N each request carries N decisions to /v1/decide/batch and --rps still
counts decisions. Requests still due --duration after the start may go out for a grace
period (a tenth of the duration, at least 2s); what is left then counts as unsent.

The mix: weighted request templates, YAML or JSON (--mix FILE). Without --mix, a
built-in mix for the policies in examples/policies (push them first); print it with
--print-mix and edit it:

  templates:
    - name: treasury-transfer   # a label for reports
      weight: 80                # relative weight
      action: transfer          # Action::\"transfer\"
      namespace: payment.transfer.finance.usa.acme
      pack: treasury            # optional: a fixed pack (else pack-<n % --packs>)
      agent_prefix: treasury-agent  # optional: agent ids are <prefix>-<n>
      agents: 20                # optional: distinct agents (default --agents)
      subject: { credit_score: 700 }           # optional agent attributes
      resource: { type: Account, id: acct-9, properties: {} }   # optional
      context: { amount: 250 }  # optional; namespace is added

Output: a progress bar on a terminal (none when stdout is not one), then the summary:
achieved rate, p50/p95/p99/p99.9/max latency, outcome counts and error rate, and when
requests were shed (429) or failed, the latency of the admitted ones alone (--json
prints it as JSON). --output FILE writes one CSV row per second of the schedule:
second,sent,answered,errors,<one column per outcome>,p50_us,p99_us.

Exit codes: 0 when every gate given (--slo-p99, --max-error-rate) is met; 1 when one is
not (each unmet gate is named on stderr) or the run could not start.

Example:
  dynscale loadgen --url http://127.0.0.1:8470 --agents 1000 --packs 50 \\
    --rps 5000 --duration 60s --output run.csv --slo-p99 200ms --max-error-rate 0.1%";

const CERTIFY_HELP: &str = "\
Steps: open-loop load (the loadgen engine and mix) starting at --start-rps and doubling
while steps meet the objective; after the first failing step, steps bisect between the
best passing and the lowest failing rate until they are within 10 %. --duration is
split evenly over at most --steps steps. A step passes when p99 <= --slo-p99, the error
rate <= --max-error-rate and at least 90 % of the offered rate was answered.

Output: scale-report.json and scale-report.md in --output-dir (steps, the limit, the
machine: cores, memory, date), then PUT /v1/scale/limits on the node with the JSON
report. A node without that endpoint gets a warning; the files are still written.
Exit codes: 0 when a limit was found, 1 when no step met the objective or on error.

Example:
  dynscale certify --url http://127.0.0.1:8470 --duration 30s --slo-p99 200ms";

/// `dynscale audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest entries of a node's log.
    Tail {
        /// How many entries.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the logged entry of one decision (or event) by its id.
    Show {
        /// The decision id from a decision's answer.
        #[arg(value_name = "DECISION_ID")]
        id: Uuid,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the public key (C2SP vkey) that verifies the log's checkpoints.
    Pubkey {
        /// Read it from a data directory instead of asking a node.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a proof bundle for one decision: its entry, an inclusion proof and a
    /// signed checkpoint. `audit verify-proof` checks it offline.
    Prove {
        #[arg(value_name = "DECISION_ID")]
        id: Uuid,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check a proof bundle offline with only the log's public key.
    VerifyProof {
        /// The bundle written by `audit prove`.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// The public key (vkey text, or a file holding it).
        #[arg(long, value_name = "KEY")]
        pubkey: String,
    },
    /// Check a whole log offline: every entry's checksum and leaf, every tile, every
    /// checkpoint's signature and the consistency between successive checkpoints.
    /// Names the first bad entry or file and exits 1.
    Verify {
        /// The node's data directory (the node may be stopped).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The public key (vkey text or file) [default: the one in the data directory].
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
    },
    /// Write every entry of a (stopped) node's log to stdout.
    Export {
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

/// Where the node to talk to is.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Base URL of the node.
    #[arg(
        long,
        env = "DYNSCALE_URL",
        default_value = "http://127.0.0.1:8470",
        value_name = "URL",
        value_parser = parse_url
    )]
    pub url: Url,
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text)
        .map_err(|e| format!("`{text}` is not a URL ({e}); write it like http://127.0.0.1:8470"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "`{text}` is not an http URL; write it like http://127.0.0.1:8470"
        ));
    }
    Ok(url)
}

/// `dynscale serve` flags; the environment and the file are read in `config`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Environment: DYNSCALE_CONFIG, DYNSCALE_LISTEN, DYNSCALE_DATA_DIR, DYNSCALE_MAX_BODY_BYTES,
DYNSCALE_DEFAULT_NAMESPACE, DYNSCALE_DEFAULT_DECISION, DYNSCALE_CEDAR_SCHEMA,
DYNSCALE_AUDIT_DURABILITY, DYNSCALE_LOG.

Example config file:
  listen = \"127.0.0.1:8470\"
  data_dir = \"dynscale-data\"
  default_decision = \"deny\"
  [namespace_defaults]
  acme = \"deny\"
  [audit]
  durability = \"sync\"
  max_bytes = 10737418240")]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8470; env: DYNSCALE_LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the node's state [default: ./dynscale-data; env: DYNSCALE_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file; unknown keys are errors [env: DYNSCALE_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Largest request body accepted, in bytes [env: DYNSCALE_MAX_BODY_BYTES].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Namespace for requests that name none [env: DYNSCALE_DEFAULT_NAMESPACE].
    #[arg(long, value_name = "NAMESPACE")]
    pub default_namespace: Option<String>,
    /// Decision when no policy applies [default: deny; env: DYNSCALE_DEFAULT_DECISION].
    #[arg(long, value_name = "DECISION")]
    pub default_decision: Option<DefaultDecisionArg>,
    /// Cedar schema (`.cedarschema` or JSON) to type-check policies against
    /// [env: DYNSCALE_CEDAR_SCHEMA].
    #[arg(long, value_name = "FILE")]
    pub cedar_schema: Option<PathBuf>,
    /// When a decision counts as logged: `sync` after fsync, `batch` after the write
    /// with fsync within a few milliseconds, `async` on enqueue
    /// [default: batch; env: DYNSCALE_AUDIT_DURABILITY].
    #[arg(long, value_name = "MODE")]
    pub audit_durability: Option<AuditDurabilityArg>,
}

/// Audit log durability modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditDurabilityArg {
    Sync,
    Batch,
    Async,
}

/// The decision when no policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DefaultDecisionArg {
    Allow,
    Deny,
}

/// `dynscale policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy documents without storing them; print every finding as
    /// `file:line:col: [code] field: message`, or `ok FILE (name@version)`.
    ///
    /// Offline by default (the document's own checks and Cedar syntax, plus Cedar
    /// types with --schema). With --remote the node also checks versions,
    /// dependencies and conflicts against its policies. Exits 1 if any file fails.
    Validate(ValidateArgs),
    /// Validate a document on the node, store it and activate it.
    Push(PushArgs),
    /// List the policies on the node: name, active versions, all versions, namespace.
    List(RemoteArgs),
    /// Print a stored policy document (the newest active version by default).
    Show(ShowArgs),
    /// Make an earlier version of a policy the active one again.
    Rollback(RollbackArgs),
    /// Where a policy can go: the versions its dependents accept (the compatible
    /// range), the pushed versions above the active one (a major upgrade needs a
    /// rollout strategy, or `push --force` for `immediate`), and how far back a
    /// rollback may go (two major versions).
    UpgradePath(UpgradePathArgs),
}

/// `dynscale policy upgrade-path`.
#[derive(Debug, Args)]
pub struct UpgradePathArgs {
    /// The policy name.
    pub name: String,
    /// Print the node's JSON instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// Only `--url`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale policy validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Policy documents (YAML or JSON).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Cedar schema (`.cedarschema` or JSON) to type-check the rules against (offline).
    #[arg(long, value_name = "FILE", conflicts_with = "remote")]
    pub schema: Option<PathBuf>,
    /// Ask the node to run every check a push would run (nothing is stored).
    #[arg(long)]
    pub remote: bool,
    /// With --remote: check as `push --force` would.
    #[arg(long, requires = "remote")]
    pub force: bool,
    #[command(flatten)]
    pub remote_url: Remote,
}

/// `dynscale policy push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The policy document (YAML or JSON).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Allow a major version upgrade with `immediate` activation.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale policy show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The policy name.
    pub name: String,
    /// The version to show [default: the newest active, else the newest pushed].
    #[arg(long, value_name = "VERSION")]
    pub version: Option<semver::Version>,
    /// Print only the document, without the `#` header line.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale policy rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The policy name.
    pub name: String,
    /// The version to return to [default: the active version's `rollbackPoint`].
    #[arg(long, value_name = "VERSION")]
    pub to: Option<semver::Version>,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale decide`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The acting agent's id (the Cedar principal `Agent::"<id>"`).
    #[arg(long, value_name = "ID")]
    pub agent: String,
    /// The action name (Cedar `Action::"<name>"`).
    #[arg(long, value_name = "NAME")]
    pub action: String,
    /// The request's namespace, five segments:
    /// service.operation.division.country.org (e.g. tools.exec.eng.usa.acme).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: String,
    /// The agent's pack (`principal in Pack::"<pack>"`).
    #[arg(long, value_name = "PACK")]
    pub pack: Option<String>,
    /// The resource as TYPE:ID, e.g. `File:report.pdf` or `App::Doc:7`.
    #[arg(long, value_name = "TYPE:ID", default_value = "Resource:default", value_parser = parse_resource)]
    pub resource: ResourceRef,
    /// Extra request context, a JSON object; `namespace` is added from --namespace.
    #[arg(long, value_name = "JSON", value_parser = parse_context)]
    pub context: Option<Map<String, Value>>,
    /// Print the node's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// A resource named on the command line: Cedar `<kind>::"<id>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub kind: String,
    pub id: String,
}

/// Splits `TYPE:ID` at the first single colon, so namespaced types (`App::Doc:7`)
/// keep their `::`.
fn parse_resource(text: &str) -> Result<ResourceRef, String> {
    let bytes = text.as_bytes();
    let split = (0..bytes.len()).find(|&i| {
        bytes[i] == b':'
            && (i == 0 || bytes[i - 1] != b':')
            && bytes.get(i + 1).is_none_or(|b| *b != b':')
    });
    match split {
        Some(i) if i > 0 && i + 1 < text.len() => Ok(ResourceRef {
            kind: text[..i].to_owned(),
            id: text[i + 1..].to_owned(),
        }),
        _ => Err(format!(
            "`{text}` is not TYPE:ID (for example `File:report.pdf`)"
        )),
    }
}

fn parse_context(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the context must be a JSON object, e.g. '{\"amount\": 12}'".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// `dynscale agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register (or re-register) an agent: its pack and Cedar attributes, which
    /// override what requests claim.
    Register(RegisterArgs),
    /// Show an agent: registration, quarantine and the kill switch covering it.
    Show(AgentIdArgs),
    /// Release an agent from quarantine.
    Release(AgentIdArgs),
}

/// An agent id and the node.
#[derive(Debug, Args)]
pub struct AgentIdArgs {
    /// The agent id.
    pub id: String,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale agent register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The agent id.
    pub id: String,
    /// The agent's pack.
    #[arg(long, value_name = "PACK")]
    pub pack: Option<String>,
    /// An attribute, KEY=JSONVALUE (repeatable), e.g. `--attr credit_score=700
    /// --attr 'roles=["ops"]' --attr 'team="blue"'`.
    #[arg(long = "attr", value_name = "KEY=JSON", value_parser = parse_attr)]
    pub attrs: Vec<(String, Value)>,
    #[command(flatten)]
    pub remote: Remote,
}

fn parse_attr(text: &str) -> Result<(String, Value), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("`{text}` is not KEY=JSONVALUE"));
    };
    if key.is_empty() {
        return Err(format!("`{text}` has an empty key"));
    }
    let value = serde_json::from_str(value).map_err(|e| {
        format!("the value of `{key}` is not JSON ({e}); quote strings: {key}='\"{value}\"'")
    })?;
    Ok((key.to_owned(), value))
}

/// `dynscale escalation ...`.
#[derive(Debug, Subcommand)]
pub enum EscalationCommand {
    /// List escalations, newest first.
    List(EscalationListArgs),
    /// Show one escalation.
    Show(EscalationIdArgs),
    /// Approve a pending escalation: the same action, retried, is let through once.
    Approve(EscalationIdArgs),
    /// Deny a pending escalation and close it.
    Deny(EscalationIdArgs),
}

/// `dynscale escalation list`.
#[derive(Debug, Args)]
pub struct EscalationListArgs {
    /// Only escalations with this status.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<EscalationStatusArg>,
    /// At most this many (the node caps it at 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub remote: Remote,
}

/// Where an escalation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EscalationStatusArg {
    /// Waiting for a human.
    Pending,
    /// Approved, not yet used.
    Approved,
    /// Closed without approval.
    Denied,
    /// Approved and consumed by the retried action.
    Used,
}

impl EscalationStatusArg {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationStatusArg::Pending => "pending",
            EscalationStatusArg::Approved => "approved",
            EscalationStatusArg::Denied => "denied",
            EscalationStatusArg::Used => "used",
        }
    }
}

/// An escalation id and the node.
#[derive(Debug, Args)]
pub struct EscalationIdArgs {
    /// The escalation id (printed by `decide` and `escalation list`).
    pub id: Uuid,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale kill`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .args(["agent", "pack", "global", "list"])
        .required(true)
        .multiple(false)
))]
pub struct KillArgs {
    /// Kill (or release) one agent: its every action is denied.
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// Kill (or release) every agent of a pack.
    #[arg(long, value_name = "ID")]
    pub pack: Option<String>,
    /// Kill (or release) everything on the node.
    #[arg(long)]
    pub global: bool,
    /// Release the named kill switch instead of setting it.
    #[arg(long)]
    pub release: bool,
    /// List the kill switches in force.
    #[arg(long, conflicts_with = "release")]
    pub list: bool,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events with a larger id (to page on from the last one seen).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub after: u64,
    /// At most this many [default: 100; the node caps it at 1000].
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub remote: Remote,
}

/// The workload flags shared by `loadgen` and `certify`.
#[derive(Debug, Clone, Args)]
pub struct Workload {
    /// Distinct agents sending requests (templates may narrow it with `agents`).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub agents: u32,
    /// Packs the agents are spread over (`pack-0` ...), for templates without a pack.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub packs: u32,
    /// The request mix, YAML or JSON [default: the built-in mix, see --print-mix].
    #[arg(long, value_name = "FILE")]
    pub mix: Option<PathBuf>,
    /// Decisions per request; above 1 uses POST /v1/decide/batch.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Keep-alive connections (one in-flight request each).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// How long one request may take before it counts as an error.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Seeds the choice of template and agent for each request (same seed, same requests).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub remote: Remote,
}

/// `dynscale loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// Decisions per second offered, whatever the node answers (open loop).
    #[arg(long, value_name = "RATE", default_value = "1000", value_parser = parse_rate)]
    pub rps: f64,
    /// How long requests are due for, e.g. 60s or 5m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Write one CSV row per second here.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Gate: fail (exit 1) when p99 latency is above this, e.g. 200ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub slo_p99: Option<Duration>,
    /// Gate: fail (exit 1) when the share of failed or unsent decisions is above
    /// this, e.g. 0.1% or 0.001.
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    pub max_error_rate: Option<f64>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print the built-in request mix (YAML) and exit.
    #[arg(long)]
    pub print_mix: bool,
    #[command(flatten)]
    pub workload: Workload,
}

/// `dynscale certify`.
#[derive(Debug, Clone, Args)]
pub struct CertifyArgs {
    /// Total time of all steps.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// At most this many steps (the duration is split evenly).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub steps: u32,
    /// The p99 latency objective.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub slo_p99: Duration,
    /// The error-rate objective.
    #[arg(long, value_name = "SHARE", default_value = "0.1%", value_parser = parse_share)]
    pub max_error_rate: f64,
    /// The first step's rate, decisions per second.
    #[arg(long, value_name = "RATE", default_value = "500", value_parser = parse_rate)]
    pub start_rps: f64,
    /// No step offers more than this, decisions per second.
    #[arg(long, value_name = "RATE", default_value = "1000000", value_parser = parse_rate)]
    pub max_rps: f64,
    /// Where scale-report.json and scale-report.md go.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub workload: Workload,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn resources_split_at_the_first_single_colon() {
        let r = parse_resource("App::Doc:7").expect("valid");
        assert_eq!((r.kind.as_str(), r.id.as_str()), ("App::Doc", "7"));
        let r = parse_resource("File:a:b").expect("valid");
        assert_eq!((r.kind.as_str(), r.id.as_str()), ("File", "a:b"));
        for bad in ["File", ":x", "File:", "App::Doc"] {
            assert!(parse_resource(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn context_must_be_an_object() {
        assert!(parse_context("{\"a\": 1}").is_ok());
        assert!(parse_context("[1]").is_err());
        assert!(parse_context("{").is_err());
    }

    #[test]
    fn attributes_are_key_and_json() {
        assert_eq!(
            parse_attr("score=700").expect("valid"),
            ("score".to_owned(), Value::from(700))
        );
        assert_eq!(
            parse_attr("team=\"blue\"").expect("valid"),
            ("team".to_owned(), Value::from("blue"))
        );
        assert!(parse_attr("team=blue").is_err());
        assert!(parse_attr("=1").is_err());
        assert!(parse_attr("novalue").is_err());
    }
}
