//! The pure agent-state engine. It keeps the latest opinion of each ranked
//! source and decides the state:
//!
//! 1. the agent's own hooks (injected per session),
//! 2. terminal signals: OSC 9 / OSC 777 notifications and BEL,
//! 3. screen rules from the agent's TOML (regexes over the rendered screen),
//! 4. the process itself (starting, running on recent output, idle when quiet).
//!
//! Exit and spawn errors are final and override everything. A higher-ranked
//! opinion wins while it is current; user input makes hook and signal
//! opinions stale (the user answered), so lower ranks take over until the
//! agent speaks again. No IO and no clocks: callers pass `now_ms`.

use agentos_crdt::AgentState;
use regex::Regex;

/// How long after the last output a process with no other signal counts as running.
pub const ACTIVITY_WINDOW_MS: u64 = 1500;
/// A process that has printed nothing this long after start counts as idle.
pub const STARTUP_GRACE_MS: u64 = 2000;

/// A compiled screen rule.
#[derive(Debug, Clone)]
pub struct ScreenRule {
    pub name: String,
    pub pattern: Regex,
    pub state: AgentState,
    /// Only the last `bottom_lines` non-empty rows are matched (0 = whole screen).
    pub bottom_lines: usize,
}

/// A hook event name mapped to the state it means (from the agent's TOML).
#[derive(Debug, Clone)]
pub struct HookMapping {
    pub event: String,
    pub state: AgentState,
}

#[derive(Debug, Clone, PartialEq)]
struct Opinion {
    state: AgentState,
    source: String,
    at_ms: u64,
}

/// One ranked source's opinion, for `status --explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub rank: u8,
    pub source: String,
    pub opinion: Option<AgentState>,
    pub detail: String,
    pub decided: bool,
}

#[derive(Debug)]
pub struct StateEngine {
    hook_map: Vec<HookMapping>,
    rules: Vec<ScreenRule>,
    hook: Option<Opinion>,
    signal: Option<Opinion>,
    screen: Option<Opinion>,
    started_at_ms: u64,
    last_output_ms: Option<u64>,
    last_input_ms: Option<u64>,
    final_state: Option<Opinion>,
    alive: bool,
    current: (AgentState, String),
}

impl StateEngine {
    pub fn new(hook_map: Vec<HookMapping>, rules: Vec<ScreenRule>, now_ms: u64) -> Self {
        StateEngine {
            hook_map,
            rules,
            hook: None,
            signal: None,
            screen: None,
            started_at_ms: now_ms,
            last_output_ms: None,
            last_input_ms: None,
            final_state: None,
            alive: true,
            current: (AgentState::Starting, "process".into()),
        }
    }

    /// Forget a previous run (restart): back to `starting`.
    pub fn restart(&mut self, now_ms: u64) {
        let (hm, rules) = (
            std::mem::take(&mut self.hook_map),
            std::mem::take(&mut self.rules),
        );
        *self = StateEngine::new(hm, rules, now_ms);
    }

    pub fn current(&self) -> &(AgentState, String) {
        &self.current
    }

    /// An agent hook fired. Returns false when the event means nothing to us.
    pub fn on_hook(&mut self, event: &str, now_ms: u64) -> bool {
        let Some(m) = self.hook_map.iter().find(|m| m.event == event) else {
            return false;
        };
        self.hook = Some(Opinion {
            state: m.state.clone(),
            source: format!("hook:{event}"),
            at_ms: now_ms,
        });
        true
    }

    /// Output arrived; `signals` are what it carried; `screen` renders the
    /// screen's text (called only when there are screen rules).
    pub fn on_output(
        &mut self,
        signals: &crate::term::TermSignals,
        screen: impl Fn(usize) -> String,
        now_ms: u64,
    ) {
        self.last_output_ms = Some(now_ms);
        if let Some(n) = signals.notifications.last() {
            self.signal = Some(Opinion {
                state: AgentState::Waiting,
                source: format!("osc:{}", n.chars().take(60).collect::<String>()),
                at_ms: now_ms,
            });
        } else if signals.bell {
            self.signal = Some(Opinion {
                state: AgentState::Waiting,
                source: "bel".into(),
                at_ms: now_ms,
            });
        }
        if !self.rules.is_empty() {
            self.screen = None;
            for rule in &self.rules {
                let text = screen(rule.bottom_lines);
                if rule.pattern.is_match(&text) {
                    self.screen = Some(Opinion {
                        state: rule.state.clone(),
                        source: format!("screen:{}", rule.name),
                        at_ms: now_ms,
                    });
                    break;
                }
            }
        }
    }

    /// A new daemon adopted a running agent: its last output happened at
    /// `last_output_ms` (the log's mtime), not now.
    pub fn adopt(&mut self, last_output_ms: Option<u64>) {
        self.last_output_ms = last_output_ms;
    }

    /// Re-evaluate only the screen rules (after replaying history, which is
    /// not fresh activity).
    pub fn on_screen(&mut self, screen: impl Fn(usize) -> String, now_ms: u64) {
        self.screen = None;
        for rule in &self.rules {
            if rule.pattern.is_match(&screen(rule.bottom_lines)) {
                self.screen = Some(Opinion {
                    state: rule.state.clone(),
                    source: format!("screen:{}", rule.name),
                    at_ms: now_ms,
                });
                break;
            }
        }
    }

    /// The user (or `agentos send`) typed: hook and signal opinions from
    /// before the input are answered and no longer current.
    pub fn on_input(&mut self, now_ms: u64) {
        self.last_input_ms = Some(now_ms);
    }

    pub fn on_exit(&mut self, code: i32, now_ms: u64) {
        self.alive = false;
        // An error already decided (a limit that stopped the agent) explains
        // this exit better than its code.
        if self
            .final_state
            .as_ref()
            .is_some_and(|o| matches!(o.state, AgentState::Error { .. }))
        {
            return;
        }
        self.final_state = Some(Opinion {
            state: AgentState::Exited { code },
            source: "process".into(),
            at_ms: now_ms,
        });
    }

    pub fn on_error(&mut self, message: String, now_ms: u64) {
        self.alive = false;
        self.final_state = Some(Opinion {
            state: AgentState::Error { message },
            source: "process".into(),
            at_ms: now_ms,
        });
    }

    fn fresh<'a>(&self, o: &'a Option<Opinion>) -> Option<&'a Opinion> {
        o.as_ref()
            .filter(|o| self.last_input_ms.is_none_or(|input| o.at_ms >= input))
    }

    fn process_opinion(&self, now_ms: u64) -> (AgentState, String) {
        match self.last_output_ms {
            None if now_ms.saturating_sub(self.started_at_ms) < STARTUP_GRACE_MS => {
                (AgentState::Starting, "process: no output yet".into())
            }
            None => (
                AgentState::Idle,
                "process: alive, silent since start".into(),
            ),
            Some(t) if now_ms.saturating_sub(t) < ACTIVITY_WINDOW_MS => (
                AgentState::Running,
                "process: output in the last 1.5 s".into(),
            ),
            Some(_) => (AgentState::Idle, "process: alive, quiet".into()),
        }
    }

    /// Decide now. Returns `Some` when the state or its source changed.
    pub fn decide(&mut self, now_ms: u64) -> Option<(AgentState, String)> {
        let next = if let Some(f) = &self.final_state {
            (f.state.clone(), f.source.clone())
        } else if let Some(h) = self.fresh(&self.hook) {
            (h.state.clone(), h.source.clone())
        } else if let Some(s) = self.fresh(&self.signal) {
            (s.state.clone(), s.source.clone())
        } else if let Some(s) = &self.screen {
            (s.state.clone(), s.source.clone())
        } else {
            let (state, _) = self.process_opinion(now_ms);
            (state, "process".to_string())
        };
        if next != self.current {
            self.current = next.clone();
            Some(next)
        } else {
            None
        }
    }

    /// When the process opinion may next change on its own (running → idle).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if !self.alive {
            return None;
        }
        Some(match self.last_output_ms {
            Some(t) => t + ACTIVITY_WINDOW_MS,
            None => self.started_at_ms + STARTUP_GRACE_MS,
        })
    }

    pub fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }

    /// Every source's current opinion, highest rank first.
    pub fn explain(&self, now_ms: u64) -> Vec<Explained> {
        let ago = |t: u64| format!("{:.1}s ago", now_ms.saturating_sub(t) as f64 / 1000.0);
        let decided = &self.current.1;
        let mut out = Vec::new();
        if let Some(f) = &self.final_state {
            out.push(Explained {
                rank: 0,
                source: "exit".into(),
                opinion: Some(f.state.clone()),
                detail: format!("process ended {}", ago(f.at_ms)),
                decided: true,
            });
        }
        let hook_detail = if self.hook_map.is_empty() {
            "this agent type has no hook recipe".to_string()
        } else {
            match &self.hook {
                None => "no hook has fired yet".into(),
                Some(h) if self.fresh(&self.hook).is_none() => {
                    format!("{} {} (stale: user input since)", h.source, ago(h.at_ms))
                }
                Some(h) => format!("{} {}", h.source, ago(h.at_ms)),
            }
        };
        out.push(Explained {
            rank: 1,
            source: "hooks".into(),
            opinion: self.fresh(&self.hook).map(|o| o.state.clone()),
            detail: hook_detail,
            decided: self.final_state.is_none() && decided.starts_with("hook:"),
        });
        out.push(Explained {
            rank: 2,
            source: "osc/bel".into(),
            opinion: self.fresh(&self.signal).map(|o| o.state.clone()),
            detail: match &self.signal {
                None => "no OSC 9/777 notification or BEL seen".into(),
                Some(s) => format!("{} {}", s.source, ago(s.at_ms)),
            },
            decided: self.final_state.is_none()
                && (decided.starts_with("osc:") || decided == "bel"),
        });
        out.push(Explained {
            rank: 3,
            source: "screen rules".into(),
            opinion: self.screen.as_ref().map(|o| o.state.clone()),
            detail: if self.rules.is_empty() {
                "this agent type has no screen rules".into()
            } else {
                match &self.screen {
                    None => format!("none of {} rules match", self.rules.len()),
                    Some(s) => format!("{} matches", s.source),
                }
            },
            decided: self.final_state.is_none() && decided.starts_with("screen:"),
        });
        let (p, detail) = if self.alive {
            self.process_opinion(now_ms)
        } else {
            (self.current.0.clone(), "process ended".into())
        };
        out.push(Explained {
            rank: 4,
            source: "process".into(),
            opinion: Some(p),
            detail,
            decided: self.final_state.is_none() && decided == "process",
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::TermSignals;

    fn engine() -> StateEngine {
        StateEngine::new(
            vec![
                HookMapping {
                    event: "Notification".into(),
                    state: AgentState::Waiting,
                },
                HookMapping {
                    event: "Stop".into(),
                    state: AgentState::Idle,
                },
                HookMapping {
                    event: "UserPromptSubmit".into(),
                    state: AgentState::Running,
                },
            ],
            vec![ScreenRule {
                name: "prompt".into(),
                pattern: Regex::new(r"\(y/n\)").unwrap(),
                state: AgentState::Waiting,
                bottom_lines: 3,
            }],
            0,
        )
    }

    fn out(e: &mut StateEngine, screen: &str, sig: TermSignals, now: u64) {
        let s = screen.to_string();
        e.on_output(&sig, move |_| s.clone(), now);
    }

    #[test]
    fn process_fallback_goes_starting_running_idle() {
        let mut e = StateEngine::new(vec![], vec![], 0);
        assert_eq!(e.current().0, AgentState::Starting);
        out(&mut e, "hi", TermSignals::default(), 10);
        assert_eq!(e.decide(10).unwrap().0, AgentState::Running);
        assert_eq!(e.next_deadline_ms(), Some(10 + ACTIVITY_WINDOW_MS));
        assert_eq!(
            e.decide(10 + ACTIVITY_WINDOW_MS).unwrap().0,
            AgentState::Idle
        );
    }

    #[test]
    fn hooks_outrank_everything_but_exit() {
        let mut e = engine();
        out(&mut e, "Proceed? (y/n)", TermSignals::default(), 5);
        assert_eq!(
            e.decide(5).unwrap(),
            (AgentState::Waiting, "screen:prompt".into())
        );
        assert!(e.on_hook("Stop", 6));
        assert_eq!(e.decide(6).unwrap(), (AgentState::Idle, "hook:Stop".into()));
        let sig = TermSignals {
            bell: true,
            notifications: vec![],
        };
        out(&mut e, "Proceed? (y/n)", sig, 7);
        assert_eq!(e.decide(7), None, "hook still decides");
        e.on_exit(3, 8);
        assert_eq!(e.decide(8).unwrap().0, AgentState::Exited { code: 3 });
        assert!(!e.on_hook("Unknown", 9));
    }

    #[test]
    fn input_makes_hook_and_signal_stale() {
        let mut e = engine();
        e.on_hook("Notification", 1);
        assert_eq!(e.decide(1).unwrap().0, AgentState::Waiting);
        e.on_input(2);
        out(&mut e, "working", TermSignals::default(), 3);
        assert_eq!(
            e.decide(3).unwrap(),
            (AgentState::Running, "process".into())
        );
        let sig = TermSignals {
            bell: false,
            notifications: vec!["need you".into()],
        };
        out(&mut e, "working", sig, 4);
        assert_eq!(e.decide(4).unwrap().1, "osc:need you");
        let ex = e.explain(4);
        assert_eq!(ex.iter().filter(|x| x.decided).count(), 1);
        assert!(ex.iter().any(|x| x.rank == 2 && x.decided));
    }
}
