//! The permission model of a shared session, as one pure table
//! ([`allowed`]): which level may do what. The `SessionActor` asks it before
//! acting on any message; clients are never trusted to hold back.
//!
//! | action | view | comment | edit | owner |
//! |---|---|---|---|---|
//! | see output, agents, presence; heartbeat; leave | ✓ | ✓ | ✓ | ✓ |
//! | comment, reply, react, resolve, delete own comment | | ✓ | ✓ | ✓ |
//! | ask for control | | ✓ | ✓ | |
//! | type (no one holds control) | | | ✓ | ✓ |
//! | type (someone holds control) | | holder | holder | ✓ |
//! | resize the PTY (the driver) | | holder | holder | ✓ when no one holds control |
//! | start / stop agents; edit the shared memory (tasks, decisions, context) | | | ✓ | ✓ |
//! | grant, deny, revoke control; change permissions; kick; transfer ownership; delete the session; delete any comment | | | | ✓ |

use agentos_proto::ws::Permission;

/// Something a participant asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Watch,
    Comment,
    DeleteOwnComment,
    DeleteAnyComment,
    RequestControl,
    ReleaseControl,
    Input,
    Resize,
    StartStopAgents,
    EditMemory,
    Moderate,
}

/// Who holds the floor, seen from the asking person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    Free,
    Mine,
    Other,
}

/// May a person at `level` do `action`, given the floor?
pub fn allowed(level: Permission, action: Action, floor: Floor) -> bool {
    use Permission::*;
    match action {
        Action::Watch => true,
        Action::Comment | Action::DeleteOwnComment => level >= Comment,
        Action::RequestControl => matches!(level, Comment | Edit) && floor != Floor::Mine,
        Action::ReleaseControl => floor == Floor::Mine,
        Action::Input => match floor {
            _ if level == Owner => true,
            Floor::Mine => level >= Comment,
            Floor::Free => level >= Edit,
            Floor::Other => false,
        },
        Action::Resize => match floor {
            Floor::Mine => level >= Comment,
            Floor::Free => level == Owner,
            Floor::Other => false,
        },
        Action::StartStopAgents | Action::EditMemory => level >= Edit,
        Action::DeleteAnyComment | Action::Moderate => level == Owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn the_table() {
        let all = [View, Comment, Edit, Owner];
        for p in all {
            assert!(allowed(p, Action::Watch, Floor::Free));
            assert_eq!(allowed(p, Action::Comment, Floor::Free), p >= Comment);
            assert_eq!(allowed(p, Action::Moderate, Floor::Free), p == Owner);
            assert_eq!(allowed(p, Action::StartStopAgents, Floor::Free), p >= Edit);
            assert_eq!(allowed(p, Action::EditMemory, Floor::Free), p >= Edit);
            assert_eq!(allowed(p, Action::EditMemory, Floor::Other), p >= Edit);
            // Owners always type; others only with the floor free (edit) or theirs.
            assert_eq!(allowed(p, Action::Input, Floor::Free), p >= Edit);
            assert_eq!(allowed(p, Action::Input, Floor::Other), p == Owner);
            // Only the driver resizes.
            assert_eq!(allowed(p, Action::Resize, Floor::Free), p == Owner);
            assert!(!allowed(p, Action::Resize, Floor::Other));
        }
        // View can never type, even if some bug handed it the floor.
        assert!(!allowed(View, Action::Input, Floor::Mine));
        assert!(allowed(Comment, Action::Input, Floor::Mine));
        assert!(allowed(Comment, Action::Resize, Floor::Mine));
        assert!(!allowed(View, Action::RequestControl, Floor::Free));
        assert!(allowed(Comment, Action::RequestControl, Floor::Other));
        assert!(!allowed(Owner, Action::RequestControl, Floor::Free));
        assert!(allowed(Comment, Action::ReleaseControl, Floor::Mine));
        assert!(!allowed(Edit, Action::ReleaseControl, Floor::Other));
    }
}
