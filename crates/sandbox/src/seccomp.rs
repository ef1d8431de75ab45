//! The seccomp filter every sandboxed agent runs under. It returns EPERM
//! (and, with `SECCOMP_FILTER_FLAG_LOG`, leaves a kernel audit record) for
//! the calls that escape or widen a sandbox: new namespaces, mounts,
//! `chroot`, ptrace and cross-process memory access, `io_uring` (which
//! bypasses the checks of the syscalls it replaces), kernel keyrings, BPF,
//! TIOCSTI terminal injection, and socket families other than Unix, IPv4,
//! IPv6 and netlink.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Syscalls denied outright.
const DENIED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_open_by_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
];

/// Namespace flags `clone` may not carry.
const NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Socket families an agent may open.
const FAMILIES: &[u64] = &[
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
    libc::AF_NETLINK as u64,
];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(|e| e.to_string())
}

fn arch() -> Result<TargetArch, String> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        "riscv64" => Ok(TargetArch::riscv64),
        other => Err(format!("no seccomp filter for the {other} architecture")),
    }
}

/// Build the filters (all are installed).
pub fn programs() -> Result<Vec<BpfProgram>, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in DENIED {
        rules.insert(nr, vec![]);
    }
    let rule = |c: Vec<SeccompCondition>| SeccompRule::new(c).map_err(|e| e.to_string());
    // socket(family, ...) with a family outside the list.
    let family_rule = rule(
        FAMILIES
            .iter()
            .map(|&f| cond(0, SeccompCmpOp::Ne, f))
            .collect::<Result<_, _>>()?,
    )?;
    rules.insert(libc::SYS_socket, vec![family_rule.clone()]);
    rules.insert(libc::SYS_socketpair, vec![family_rule]);
    // clone(flags, ...) creating a namespace.
    let mut clone_rules = Vec::new();
    for &flag in NS_FLAGS {
        clone_rules.push(rule(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    // ioctl(fd, TIOCSTI, ...): typing into the terminal of someone else.
    rules.insert(
        libc::SYS_ioctl,
        vec![rule(vec![cond(
            1,
            SeccompCmpOp::MaskedEq(0xffff_ffff),
            libc::TIOCSTI,
        )?])?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(|e| e.to_string())?;
    let main: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    // clone3 passes its flags through a pointer the filter cannot read:
    // answer ENOSYS so libc falls back to clone, which is checked. One error
    // number per filter, so this is a second filter.
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_clone3, vec![]);
    let clone3: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| e.to_string())?;
    Ok(vec![main, clone3])
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const seccompiler::sock_filter,
}

fn install_one(prog: &BpfProgram) -> Result<(), String> {
    let fprog = SockFprog {
        len: u16::try_from(prog.len()).map_err(|_| "seccomp program too long".to_string())?,
        filter: prog.as_ptr(),
    };
    // SAFETY: the kernel copies the program; `fprog` and `prog` outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_LOG,
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(format!(
            "seccomp filter refused: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Install the filter on this thread (the launcher is single-threaded), with
/// `SECCOMP_FILTER_FLAG_LOG` so that each denial leaves an audit record.
/// `no_new_privs` must already be set (Landlock's `restrict_self` sets it).
pub fn install() -> Result<(), String> {
    for prog in programs()? {
        install_one(&prog)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filter_compiles() {
        let p = super::programs().unwrap();
        assert!(p[0].len() > 40, "{}", p[0].len());
    }
}
