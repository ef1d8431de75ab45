//! Per-session hook injection. Each recipe writes a settings file into the
//! agent's own run directory and returns the flags or environment that point
//! the agent at it. The user's global agent config is never written.
//!
//! Every hook runs `agentos hook --agent-id <id> --event <Event>`, which
//! records the event in the agent's `hooks.jsonl` and tells the daemon; it
//! always exits 0 so a hook can never block the agent.

use crate::definitions::{AgentDefinition, HookRecipe};
use std::path::Path;

/// What to add to the agent's command line and environment.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Injection {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

fn sh_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn hook_command(exe: &Path, agent_id: &str, event: &str, ack_json: bool) -> String {
    let mut c = format!(
        "{} hook --agent-id {} --event {}",
        sh_quote(&exe.display().to_string()),
        sh_quote(agent_id),
        sh_quote(event)
    );
    if ack_json {
        c.push_str(" --ack-json");
    }
    c
}

fn settings_json(
    def: &AgentDefinition,
    exe: &Path,
    agent_id: &str,
    ack_json: bool,
) -> serde_json::Value {
    let mut hooks = serde_json::Map::new();
    for event in def.hooks.events.keys() {
        hooks.insert(
            event.clone(),
            serde_json::json!([{
                "matcher": "",
                "hooks": [{ "type": "command", "command": hook_command(exe, agent_id, event, ack_json) }]
            }]),
        );
    }
    serde_json::json!({ "hooks": hooks })
}

/// Prepare the hooks for one session of `def`.
pub fn inject(
    def: &AgentDefinition,
    agent_dir: &Path,
    agent_id: &str,
    exe: &Path,
) -> std::io::Result<Injection> {
    match def.hooks.recipe {
        HookRecipe::None => Ok(Injection::default()),
        HookRecipe::ClaudeSettings => {
            let path = agent_dir.join("claude-settings.json");
            let json = settings_json(def, exe, agent_id, false);
            std::fs::write(&path, serde_json::to_vec_pretty(&json)?)?;
            Ok(Injection {
                args: vec!["--settings".into(), path.display().to_string()],
                env: vec![],
            })
        }
        HookRecipe::GeminiSettings => {
            let path = agent_dir.join("gemini-settings.json");
            let mut json = settings_json(def, exe, agent_id, true);
            json["tools"] = serde_json::json!({ "enableHooks": true });
            std::fs::write(&path, serde_json::to_vec_pretty(&json)?)?;
            Ok(Injection {
                args: vec![],
                env: vec![(
                    "GEMINI_CLI_SYSTEM_SETTINGS_PATH".into(),
                    path.display().to_string(),
                )],
            })
        }
        HookRecipe::CodexNotify => {
            let argv = [
                exe.display().to_string(),
                "hook".into(),
                "--agent-id".into(),
                agent_id.into(),
                "--event".into(),
                "notify".into(),
            ];
            let list = serde_json::to_string(&argv).map_err(std::io::Error::other)?;
            Ok(Injection {
                args: vec!["-c".into(), format!("notify={list}")],
                env: vec![],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::Catalog;

    #[test]
    fn claude_gets_a_settings_file_with_every_mapped_event() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::load(&dir.path().join("none"));
        let def = cat.resolve("claude").unwrap();
        let inj = inject(def, dir.path(), "ab12", Path::new("/opt/my tools/agentos")).unwrap();
        assert_eq!(inj.args[0], "--settings");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&inj.args[1]).unwrap()).unwrap();
        let cmd = v["hooks"]["Notification"][0]["hooks"][0]["command"]
            .as_str()
            .unwrap();
        assert_eq!(
            cmd,
            "'/opt/my tools/agentos' hook --agent-id ab12 --event Notification"
        );
        assert!(v["hooks"]["Stop"].is_array());
    }

    #[test]
    fn codex_and_gemini_recipes() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::load(&dir.path().join("none"));
        let inj = inject(
            cat.resolve("codex").unwrap(),
            dir.path(),
            "x",
            Path::new("/bin/agentos"),
        )
        .unwrap();
        assert_eq!(
            inj.args,
            vec![
                "-c",
                r#"notify=["/bin/agentos","hook","--agent-id","x","--event","notify"]"#
            ]
        );
        let inj = inject(
            cat.resolve("gemini").unwrap(),
            dir.path(),
            "x",
            Path::new("/bin/agentos"),
        )
        .unwrap();
        assert_eq!(inj.env[0].0, "GEMINI_CLI_SYSTEM_SETTINGS_PATH");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&inj.env[0].1).unwrap()).unwrap();
        assert!(
            v["hooks"]["AfterAgent"][0]["hooks"][0]["command"]
                .as_str()
                .unwrap()
                .ends_with("--ack-json")
        );
    }
}
