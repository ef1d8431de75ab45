//! Agents are data: each agent type is a TOML definition (command, args,
//! detection, install hint, resume strategy, hook recipe, state rules, Enter
//! delay, environment). The built-ins are embedded from `crates/node/agents/`;
//! users add `custom/<name>` by dropping `$AGENTOS_HOME/agents/<name>.toml`.
//! Presets (several named agents at once) work the same way.

use agentos_actors::state::{HookMapping, ScreenRule};
use agentos_crdt::AgentState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const BUILTIN_AGENTS: &[(&str, &str)] = &[
    ("claude-code", include_str!("../agents/claude-code.toml")),
    ("gemini-cli", include_str!("../agents/gemini-cli.toml")),
    ("openai-codex", include_str!("../agents/openai-codex.toml")),
    ("aider", include_str!("../agents/aider.toml")),
    ("gh-copilot", include_str!("../agents/gh-copilot.toml")),
    ("amp-code", include_str!("../agents/amp-code.toml")),
    ("opencode", include_str!("../agents/opencode.toml")),
    ("shell", include_str!("../agents/shell.toml")),
];

const BUILTIN_PRESETS: &[(&str, &str)] = &[
    ("duo", include_str!("../presets/duo.toml")),
    ("trio", include_str!("../presets/trio.toml")),
];

/// How the agent's own hooks are injected for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookRecipe {
    #[default]
    None,
    /// Claude Code: `--settings <file>` with a `hooks` table.
    ClaudeSettings,
    /// Gemini CLI: `GEMINI_CLI_SYSTEM_SETTINGS_PATH=<file>`.
    GeminiSettings,
    /// Codex: `-c notify=[…]`; the payload is the program's last argument.
    CodexNotify,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hooks {
    pub recipe: HookRecipe,
    /// Hook event name → state it means (`running`, `idle`, `waiting`).
    pub events: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Detect {
    /// The binary looked up on PATH (defaults to `command`).
    pub binary: Option<String>,
    pub version_args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resume {
    /// Arguments appended on restore; `{id}` is the agent's own conversation id.
    /// When they contain `{id}` and no id is known, the agent starts fresh.
    pub args: Vec<String>,
    /// Field of a hook payload that carries the conversation id.
    pub id_field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRuleDef {
    pub name: String,
    pub pattern: String,
    pub state: String,
    #[serde(default)]
    pub bottom_lines: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefinition {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub detect: Detect,
    #[serde(default)]
    pub install_hint: String,
    #[serde(default)]
    pub resume: Resume,
    #[serde(default)]
    pub hooks: Hooks,
    #[serde(default)]
    pub state_rules: Vec<StateRuleDef>,
    #[serde(default)]
    pub enter_delay_ms: u64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Paths in the user's home (its configuration and login) that the
    /// agent sees in its own HOME inside the sandbox, read-write.
    #[serde(default)]
    pub home_paths: Vec<String>,
    /// Where it came from (`builtin` or a file path); not part of the TOML.
    #[serde(skip)]
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("invalid agent definition {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("unknown agent type `{0}`")]
    Unknown(String),
    #[error("unknown preset `{0}`")]
    UnknownPreset(String),
}

fn parse_state(s: &str, origin: &str) -> Result<AgentState, DefinitionError> {
    Ok(match s {
        "running" => AgentState::Running,
        "idle" => AgentState::Idle,
        "waiting" => AgentState::Waiting,
        other => {
            return Err(DefinitionError::Invalid {
                origin: origin.to_string(),
                message: format!("state `{other}` must be running, idle or waiting"),
            });
        }
    })
}

impl AgentDefinition {
    pub fn parse(text: &str, origin: &str) -> Result<Self, DefinitionError> {
        let mut def: AgentDefinition =
            toml::from_str(text).map_err(|e| DefinitionError::Invalid {
                origin: origin.to_string(),
                message: e.message().to_string(),
            })?;
        def.origin = origin.to_string();
        // Validate eagerly so a bad file is reported when loaded, not at spawn.
        def.hook_map()?;
        def.screen_rules()?;
        Ok(def)
    }

    pub fn hook_map(&self) -> Result<Vec<HookMapping>, DefinitionError> {
        if self.hooks.recipe == HookRecipe::None {
            return Ok(Vec::new());
        }
        self.hooks
            .events
            .iter()
            .map(|(event, state)| {
                Ok(HookMapping {
                    event: event.clone(),
                    state: parse_state(state, &self.origin)?,
                })
            })
            .collect()
    }

    pub fn screen_rules(&self) -> Result<Vec<ScreenRule>, DefinitionError> {
        self.state_rules
            .iter()
            .map(|r| {
                Ok(ScreenRule {
                    name: r.name.clone(),
                    pattern: regex::Regex::new(&r.pattern).map_err(|e| {
                        DefinitionError::Invalid {
                            origin: self.origin.clone(),
                            message: format!("rule `{}`: {e}", r.name),
                        }
                    })?,
                    state: parse_state(&r.state, &self.origin)?,
                    bottom_lines: r.bottom_lines,
                })
            })
            .collect()
    }

    /// The program to run, with `$SHELL` expanded from `env`.
    pub fn program(&self, env: &[(String, String)]) -> String {
        expand_shell(&self.command, env)
    }

    /// The binary `doctor` looks for.
    pub fn binary(&self, env: &[(String, String)]) -> String {
        expand_shell(self.detect.binary.as_deref().unwrap_or(&self.command), env)
    }

    /// Arguments to resume conversation `id` (or to restore without one).
    pub fn resume_args(&self, id: Option<&str>) -> Vec<String> {
        let needs_id = self.resume.args.iter().any(|a| a.contains("{id}"));
        match (needs_id, id) {
            (true, None) => Vec::new(),
            (_, id) => self
                .resume
                .args
                .iter()
                .map(|a| a.replace("{id}", id.unwrap_or("")))
                .collect(),
        }
    }
}

fn expand_shell(s: &str, env: &[(String, String)]) -> String {
    if s == "$SHELL" {
        env.iter()
            .find(|(k, _)| k == "SHELL")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/bin/sh".to_string())
    } else {
        s.to_string()
    }
}

/// Every known agent type: built-ins plus the user's `custom/*`.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub agents: Vec<AgentDefinition>,
    /// Custom files that failed to load, reported by `agents list`/`doctor`.
    pub errors: Vec<String>,
}

impl Catalog {
    pub fn load(custom_dir: &Path) -> Catalog {
        let mut agents = Vec::new();
        let mut errors = Vec::new();
        for (name, text) in BUILTIN_AGENTS {
            match AgentDefinition::parse(text, &format!("builtin:{name}")) {
                Ok(d) => agents.push(d),
                Err(e) => errors.push(e.to_string()),
            }
        }
        for path in toml_files(custom_dir) {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            let origin = path.display().to_string();
            match std::fs::read_to_string(&path)
                .map_err(|e| DefinitionError::Invalid {
                    origin: origin.clone(),
                    message: e.to_string(),
                })
                .and_then(|t| AgentDefinition::parse(&t, &origin))
            {
                Ok(mut d) => {
                    // Custom agents live in their own namespace.
                    let base = d
                        .name
                        .strip_prefix("custom/")
                        .unwrap_or(&d.name)
                        .to_string();
                    let base = if base.is_empty() { stem } else { base };
                    d.aliases.push(base.clone());
                    d.name = format!("custom/{base}");
                    agents.push(d);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Catalog { agents, errors }
    }

    /// Find by name or alias; built-ins win over custom aliases.
    pub fn resolve(&self, name: &str) -> Result<&AgentDefinition, DefinitionError> {
        self.agents
            .iter()
            .find(|d| d.name == name)
            .or_else(|| {
                self.agents
                    .iter()
                    .find(|d| d.aliases.iter().any(|a| a == name))
            })
            .ok_or_else(|| DefinitionError::Unknown(name.to_string()))
    }
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Look a program up on `PATH` (or check it directly when it has a slash).
pub fn which(program: &str, path_var: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.is_file()
            && std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    path_var?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| is_exec(p))
}

/// One agent of a preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetAgent {
    pub name: String,
    pub agent: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Relative to the directory `create` runs in.
    #[serde(default)]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub agents: Vec<PresetAgent>,
}

/// Find a preset: the project's `.agentos/presets/`, then the user's, then built-ins.
pub fn find_preset(
    name: &str,
    user_dir: &Path,
    project_dir: Option<&Path>,
) -> Result<Preset, DefinitionError> {
    let mut dirs = Vec::new();
    if let Some(p) = project_dir {
        dirs.extend(p.ancestors().map(|d| d.join(".agentos").join("presets")));
    }
    dirs.push(user_dir.to_path_buf());
    for d in dirs {
        let f = d.join(format!("{name}.toml"));
        if f.is_file() {
            let text = std::fs::read_to_string(&f).map_err(|e| DefinitionError::Invalid {
                origin: f.display().to_string(),
                message: e.to_string(),
            })?;
            return toml::from_str(&text).map_err(|e| DefinitionError::Invalid {
                origin: f.display().to_string(),
                message: e.message().to_string(),
            });
        }
    }
    BUILTIN_PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, t)| {
            toml::from_str(t).map_err(|e: toml::de::Error| DefinitionError::Invalid {
                origin: format!("builtin:{n}"),
                message: e.message().to_string(),
            })
        })
        .unwrap_or_else(|| Err(DefinitionError::UnknownPreset(name.to_string())))
}

/// Names of the built-in presets.
pub fn builtin_presets() -> Vec<Preset> {
    BUILTIN_PRESETS
        .iter()
        .filter_map(|(_, t)| toml::from_str(t).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_resolve_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::load(dir.path());
        assert!(cat.errors.is_empty(), "{:?}", cat.errors);
        assert_eq!(cat.agents.len(), 8);
        for (alias, name) in [
            ("claude", "claude-code"),
            ("gemini", "gemini-cli"),
            ("codex", "openai-codex"),
            ("aider", "aider"),
            ("shell", "shell"),
        ] {
            assert_eq!(cat.resolve(alias).unwrap().name, name);
        }
        assert!(cat.resolve("nope").is_err());
        let claude = cat.resolve("claude").unwrap();
        assert_eq!(claude.resume_args(Some("abc")), vec!["--resume", "abc"]);
        assert!(claude.resume_args(None).is_empty());
        assert!(!claude.resume.args.iter().any(|a| a == "--continue"));
        assert_eq!(claude.hook_map().unwrap().len(), 6);
    }

    #[test]
    fn custom_agents_load_without_recompiling() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mybot.toml"),
            "name = \"mybot\"\ncommand = \"mybot\"\nargs = [\"--fast\"]\n[[state_rules]]\nname = \"p\"\npattern = \"> $\"\nstate = \"idle\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.toml"), "name = 1").unwrap();
        let cat = Catalog::load(dir.path());
        assert_eq!(cat.resolve("custom/mybot").unwrap().args, vec!["--fast"]);
        assert_eq!(cat.resolve("mybot").unwrap().name, "custom/mybot");
        assert_eq!(cat.errors.len(), 1);
    }

    #[test]
    fn presets_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let p = find_preset("duo", dir.path(), None).unwrap();
        assert_eq!(p.agents.len(), 2);
        assert!(matches!(
            find_preset("zzz", dir.path(), None),
            Err(DefinitionError::UnknownPreset(_))
        ));
    }
}
