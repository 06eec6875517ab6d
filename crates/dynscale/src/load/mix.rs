//! The request mix of the load generator: weighted request templates read from YAML
//! or JSON (or the built-in default over the example policies), and the choice of
//! template and agent for each request, reproducible from a seed and the request's
//! number.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The built-in mix, for the policies in `examples/policies`.
pub const DEFAULT_MIX: &str = include_str!("default-mix.yaml");

/// Why a mix could not be used. `origin` names the file (or "the default mix").
#[derive(Debug, thiserror::Error)]
pub enum MixError {
    #[error("reading {origin}: {reason}")]
    Read { origin: String, reason: String },
    #[error("{origin}: {reason}")]
    Parse { origin: String, reason: String },
    #[error("{origin}: templates[{index}] ({name}): {reason}")]
    Template {
        origin: String,
        index: usize,
        name: String,
        reason: String,
    },
    #[error("{origin}: the mix has no template with a positive weight")]
    Empty { origin: String },
}

/// A mix file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MixFile {
    templates: Vec<TemplateFile>,
}

/// One template as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    name: String,
    weight: u32,
    action: String,
    namespace: String,
    /// A fixed pack; without it each agent is in its own pack of the `--packs` pool.
    #[serde(default)]
    pack: Option<String>,
    /// Agent ids are `<prefix>-<n>`; default `<pack>-agent` with a pack, else `agent`.
    #[serde(default)]
    agent_prefix: Option<String>,
    /// How many distinct agents send this template; default `--agents`.
    #[serde(default)]
    agents: Option<u32>,
    /// Extra subject properties (Cedar attributes of the agent).
    #[serde(default)]
    subject: Map<String, Value>,
    #[serde(default)]
    resource: Option<ResourceFile>,
    #[serde(default)]
    context: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ResourceFile {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default)]
    properties: Map<String, Value>,
}

/// A checked template, its request parts built once.
#[derive(Debug, Clone)]
pub struct Template {
    pub weight: u32,
    pack: Option<String>,
    agent_prefix: String,
    agents: Option<u32>,
    subject: Map<String, Value>,
    action: Value,
    resource: Value,
    /// The context with `namespace` added.
    context: Value,
}

/// A checked mix.
#[derive(Debug, Clone)]
pub struct Mix {
    /// Where it came from, for reports.
    pub source: String,
    pub templates: Vec<Template>,
    /// Running sums of the weights, for the weighted choice.
    cumulative: Vec<u64>,
}

/// The fleet the requests come from (`--agents`, `--packs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    pub agents: u32,
    pub packs: u32,
}

/// One request's choices: which template, which agent, which pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub template: usize,
    pub agent: String,
    pub pack: String,
}

impl Mix {
    /// Reads a mix from a YAML or JSON file (JSON is YAML).
    pub fn from_file(path: &Path) -> Result<Self, MixError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MixError::Read {
            origin: source.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &source)
    }

    /// The built-in mix.
    pub fn default_mix() -> Result<Self, MixError> {
        Self::parse(DEFAULT_MIX, "the default mix")
    }

    /// Parses and checks a mix; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, MixError> {
        let file: MixFile = serde_yaml::from_str(text).map_err(|e| MixError::Parse {
            origin: source.to_owned(),
            reason: e.to_string(),
        })?;
        let mut templates = Vec::with_capacity(file.templates.len());
        for (index, t) in file.templates.into_iter().enumerate() {
            let bad = |reason: String| MixError::Template {
                origin: source.to_owned(),
                index,
                name: t.name.clone(),
                reason,
            };
            if t.action.is_empty() {
                return Err(bad("`action` is empty".into()));
            }
            if t.namespace.split('.').count() != 5 || t.namespace.split('.').any(str::is_empty) {
                return Err(bad(format!(
                    "`namespace` {:?} is not five dot-separated segments \
                     (service.operation.division.country.org)",
                    t.namespace
                )));
            }
            if t.context.contains_key("namespace") {
                return Err(bad(
                    "`context.namespace` is set; give the namespace as `namespace`".into(),
                ));
            }
            if t.subject.contains_key("pack") {
                return Err(bad("`subject.pack` is set; give the pack as `pack`".into()));
            }
            if t.agents == Some(0) {
                return Err(bad("`agents` must be at least 1".into()));
            }
            if t.pack.as_deref() == Some("") || t.agent_prefix.as_deref() == Some("") {
                return Err(bad("`pack` and `agent_prefix` may not be empty".into()));
            }
            let agent_prefix = t.agent_prefix.clone().unwrap_or_else(|| match &t.pack {
                Some(pack) => format!("{pack}-agent"),
                None => "agent".into(),
            });
            let mut context = t.context.clone();
            context.insert("namespace".into(), Value::String(t.namespace.clone()));
            let resource = match &t.resource {
                Some(r) => {
                    serde_json::json!({"type": r.kind, "id": r.id, "properties": r.properties})
                }
                None => serde_json::json!({"type": "Resource", "id": "default"}),
            };
            templates.push(Template {
                weight: t.weight,
                pack: t.pack.clone(),
                agent_prefix,
                agents: t.agents,
                subject: t.subject.clone(),
                action: serde_json::json!({ "name": t.action }),
                resource,
                context: Value::Object(context),
            });
        }
        let mut cumulative = Vec::with_capacity(templates.len());
        let mut sum = 0u64;
        for t in &templates {
            sum += u64::from(t.weight);
            cumulative.push(sum);
        }
        if sum == 0 {
            return Err(MixError::Empty {
                origin: source.to_owned(),
            });
        }
        Ok(Self {
            source: source.to_owned(),
            templates,
            cumulative,
        })
    }

    fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The choices for request number `n` of a run seeded with `seed`: the same
    /// arguments always give the same request.
    pub fn pick(&self, seed: u64, n: u64, fleet: Fleet) -> Pick {
        let mut rng = SplitMix64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let roll = rng.next() % self.total_weight();
        let template = self.cumulative.partition_point(|&c| c <= roll);
        let t = &self.templates[template];
        let pool = t.agents.unwrap_or(fleet.agents).max(1);
        let k = rng.next() % u64::from(pool);
        let pack = match &t.pack {
            Some(p) => p.clone(),
            None => format!("pack-{}", k % u64::from(fleet.packs.max(1))),
        };
        Pick {
            template,
            agent: format!("{}-{k}", t.agent_prefix),
            pack,
        }
    }

    /// The JSON decision request (AuthZEN shape) for one pick.
    pub fn request(&self, pick: &Pick) -> Value {
        let t = &self.templates[pick.template];
        let mut properties = t.subject.clone();
        properties.insert("pack".into(), Value::String(pick.pack.clone()));
        serde_json::json!({
            "subject": {"type": "Agent", "id": pick.agent, "properties": properties},
            "action": t.action,
            "resource": t.resource,
            "context": t.context,
        })
    }

    /// One line describing the mix, for reports.
    pub fn describe(&self) -> String {
        format!("{} ({} templates)", self.source, self.templates.len())
    }
}

/// SplitMix64: a tiny, well-mixed generator; enough to spread requests over
/// templates and agents reproducibly (not for anything secret).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: Fleet = Fleet {
        agents: 100,
        packs: 10,
    };

    #[test]
    fn the_default_mix_parses() {
        let mix = Mix::default_mix().expect("default mix");
        assert!(mix.templates.len() >= 10);
        let req = mix.request(&mix.pick(7, 0, FLEET));
        assert_eq!(req["subject"]["type"], "Agent");
        assert!(req["context"]["namespace"].is_string(), "{req}");
    }

    #[test]
    fn json_mixes_parse_and_requests_carry_every_part() {
        let mix = Mix::parse(
            r#"{"templates": [{"name": "t", "weight": 1, "action": "transfer",
                "namespace": "payment.transfer.finance.usa.acme", "pack": "treasury",
                "agents": 3, "subject": {"credit_score": 700},
                "resource": {"type": "Account", "id": "a1", "properties": {"x": 1}},
                "context": {"amount": 5}}]}"#,
            "mix.json",
        )
        .expect("mix");
        let pick = mix.pick(1, 42, FLEET);
        assert_eq!(pick.pack, "treasury");
        assert!(pick.agent.starts_with("treasury-agent-"), "{pick:?}");
        assert_eq!(
            mix.request(&pick),
            serde_json::json!({
                "subject": {"type": "Agent", "id": pick.agent,
                            "properties": {"credit_score": 700, "pack": "treasury"}},
                "action": {"name": "transfer"},
                "resource": {"type": "Account", "id": "a1", "properties": {"x": 1}},
                "context": {"amount": 5, "namespace": "payment.transfer.finance.usa.acme"},
            })
        );
    }

    #[test]
    fn picks_are_reproducible_and_follow_the_weights() {
        let mix = Mix::parse(
            "templates:
  - {name: a, weight: 3, action: x, namespace: a.b.c.d.e}
  - {name: b, weight: 1, action: y, namespace: a.b.c.d.e}
  - {name: never, weight: 0, action: z, namespace: a.b.c.d.e}
",
            "mix.yaml",
        )
        .expect("mix");
        assert_eq!(mix.pick(9, 5, FLEET), mix.pick(9, 5, FLEET));
        let mut counts = [0u32; 3];
        let mut agents = std::collections::BTreeSet::new();
        for n in 0..40_000 {
            let p = mix.pick(9, n, FLEET);
            counts[p.template] += 1;
            agents.insert(p.agent.clone());
            // Without a fixed pack an agent always lands in the same pack.
            let k: u64 = p.agent["agent-".len()..].parse().expect("number");
            assert_eq!(p.pack, format!("pack-{}", k % 10));
        }
        assert_eq!(counts[2], 0);
        let share = f64::from(counts[0]) / 40_000.0;
        assert!((0.72..0.78).contains(&share), "{counts:?}");
        assert_eq!(agents.len(), 100);
    }

    #[test]
    fn bad_mixes_name_the_template_and_the_field() {
        let cases = [
            ("templates: []", "no template"),
            (
                "templates: [{name: t, weight: 0, action: x, namespace: a.b.c.d.e}]",
                "no template",
            ),
            (
                "templates: [{name: t, weight: 1, action: x, namespace: a.b.c}]",
                "templates[0] (t): `namespace`",
            ),
            (
                "templates: [{name: t, weight: 1, action: x, namespace: a.b.c.d.e, agents: 0}]",
                "`agents` must be at least 1",
            ),
            (
                "templates: [{name: t, weight: 1, action: x, namespace: a.b.c.d.e, context: {namespace: q}}]",
                "`context.namespace`",
            ),
            (
                "templates: [{name: t, weight: 1, action: x, namespace: a.b.c.d.e, colour: red}]",
                "unknown field `colour`",
            ),
            ("templates: [{name: t, weight: -1}]", "mix.yaml"),
        ];
        for (text, expected) in cases {
            let err = Mix::parse(text, "mix.yaml").expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("mix.yaml"), "{text}: {err}");
        }
    }
}
