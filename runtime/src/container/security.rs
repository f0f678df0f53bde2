//! Capabilities, rlimits, the process user, no_new_privs and seccomp, applied by the
//! container's init just before it execs the workload.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, PosixRlimit, Process,
};
use seccompiler::BpfProgram;

use super::{Error, Result};

/// The capabilities a container keeps by default (Docker's and containerd's set).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn cap_set(names: Option<&HashSet<oci_spec::runtime::Capability>>) -> Result<CapsHashSet> {
    let mut out = CapsHashSet::new();
    for c in names.into_iter().flatten() {
        // oci-spec's Capability displays without the prefix ("AUDIT_WRITE"); caps parses
        // the kernel's names ("CAP_AUDIT_WRITE").
        let name = format!("CAP_{c}");
        match Capability::from_str(&name) {
            Ok(cap) => {
                out.insert(cap);
            }
            // A capability this kernel or library does not know is skipped, as runc does.
            Err(_) => tracing::debug!(cap = %name, "unknown capability skipped"),
        }
    }
    Ok(out)
}

/// Set rlimits; called while still privileged so hard limits may be raised.
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for r in rlimits {
        let name = format!("{:?}", r.typ());
        let resource = rlimit_resource(&name)
            .ok_or_else(|| Error::Invalid(format!("unknown rlimit {name}")))?;
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads the struct we pass; resource is a valid RLIMIT_* constant.
        let rc = unsafe { libc::setrlimit(resource, &lim) };
        if rc != 0 {
            return Err(Error::Process {
                what: format!("setrlimit {name}"),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name.to_ascii_uppercase().as_str() {
        "RLIMITCPU" | "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMITFSIZE" | "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMITDATA" | "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMITSTACK" | "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMITCORE" | "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMITRSS" | "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMITNPROC" | "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMITNOFILE" | "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMITMEMLOCK" | "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMITAS" | "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMITLOCKS" | "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMITSIGPENDING" | "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMITMSGQUEUE" | "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMITNICE" | "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMITRTPRIO" | "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMITRTTIME" | "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: the options used here take integer arguments only.
    let rc = unsafe { libc::prctl(option, arg, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::Process {
            what: what.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")
}

/// Drop the bounding set, switch to the process user, then set the remaining capability
/// sets: the order runc uses, so the user switch keeps what the spec grants.
pub fn finalize_user_and_caps(process: &Process) -> Result<()> {
    let caps = process.capabilities().as_ref();
    let bounding = cap_set(caps.and_then(|c| c.bounding().as_ref()))?;
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            // Capabilities the kernel does not know return EINVAL: nothing to drop.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }

    let user = process.user();
    prctl(libc::PR_SET_KEEPCAPS, 1, "set keepcaps")?;
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    match nix::unistd::setgroups(&gids) {
        Ok(()) => {}
        // In a user namespace with setgroups denied, only an empty list was possible anyway.
        Err(nix::Error::EPERM) if gids.is_empty() => {}
        Err(e) => {
            return Err(Error::Process {
                what: "setgroups".into(),
                source: e.into(),
            })
        }
    }
    let gid = nix::unistd::Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| Error::Process {
        what: format!("setgid {}", user.gid()),
        source: e.into(),
    })?;
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| Error::Process {
        what: format!("setuid {}", user.uid()),
        source: e.into(),
    })?;
    prctl(libc::PR_SET_KEEPCAPS, 0, "clear keepcaps")?;
    if let Some(umask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }

    let set = |which: CapSet, wanted: CapsHashSet| {
        caps::set(None, which, &wanted).map_err(|e| Error::Process {
            what: format!("set {which:?} capabilities: {e}"),
            source: std::io::Error::other(e.to_string()),
        })
    };
    // Inheritable first (while CAP_SETPCAP is still effective), then effective, then
    // permitted: each capset must keep effective within permitted.
    for (which, wanted) in [
        (
            CapSet::Inheritable,
            caps.and_then(|c| c.inheritable().as_ref()),
        ),
        (CapSet::Effective, caps.and_then(|c| c.effective().as_ref())),
        (CapSet::Permitted, caps.and_then(|c| c.permitted().as_ref())),
    ] {
        set(which, cap_set(wanted)?)?;
    }
    let ambient = cap_set(caps.and_then(|c| c.ambient().as_ref()))?;
    for cap in ambient {
        // Ambient needs the capability permitted and inheritable; skip what is not.
        let _ = caps::raise(None, CapSet::Ambient, cap);
    }
    Ok(())
}

/// The seccomp profile a pod gets when it asks for `RuntimeDefault`: everything allowed
/// except the calls Docker's and containerd's default profiles refuse to unprivileged
/// containers, which fail with EPERM.
pub fn default_seccomp() -> LinuxSeccomp {
    let denied = [
        "acct",
        "add_key",
        "bpf",
        "clock_adjtime",
        "clock_settime",
        "create_module",
        "delete_module",
        "finit_module",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "get_kernel_syms",
        "get_mempolicy",
        "init_module",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mbind",
        "mount",
        "mount_setattr",
        "move_mount",
        "move_pages",
        "name_to_handle_at",
        "nfsservctl",
        "open_by_handle_at",
        "open_tree",
        "perf_event_open",
        "pivot_root",
        "process_vm_readv",
        "process_vm_writev",
        "quotactl",
        "reboot",
        "request_key",
        "set_mempolicy",
        "setns",
        "settimeofday",
        "swapoff",
        "swapon",
        "sysfs",
        "syslog",
        "umount2",
        "unshare",
        "uselib",
        "userfaultfd",
        "ustat",
        "vhangup",
    ];
    let json = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{
            "names": denied.to_vec(),
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
        }],
    });
    serde_json::from_value(json).expect("the default seccomp profile is valid")
}

/// Compile an OCI seccomp profile to BPF programs, one per distinct action; the kernel runs
/// them all and takes the most restrictive verdict, which is the profile's meaning.
/// Syscall names this architecture lacks are skipped, as runc does.
pub fn compile_seccomp(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut groups: BTreeMap<String, (seccompiler::SeccompAction, Vec<serde_json::Value>)> =
        BTreeMap::new();
    let mut all_rules: Vec<serde_json::Value> = Vec::new();
    for rule in profile.syscalls().as_deref().unwrap_or_default() {
        let act = action(rule.action(), rule.errno_ret())?;
        let key = format!("{act:?}");
        let args: Vec<serde_json::Value> = rule
            .args()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let op = match a.op() {
                    LinuxSeccompOperator::ScmpCmpNe => serde_json::json!("ne"),
                    LinuxSeccompOperator::ScmpCmpLt => serde_json::json!("lt"),
                    LinuxSeccompOperator::ScmpCmpLe => serde_json::json!("le"),
                    LinuxSeccompOperator::ScmpCmpEq => serde_json::json!("eq"),
                    LinuxSeccompOperator::ScmpCmpGe => serde_json::json!("ge"),
                    LinuxSeccompOperator::ScmpCmpGt => serde_json::json!("gt"),
                    LinuxSeccompOperator::ScmpCmpMaskedEq => {
                        serde_json::json!({"masked_eq": a.value()})
                    }
                };
                let value = if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                    a.value_two().unwrap_or(0)
                } else {
                    a.value()
                };
                serde_json::json!({"index": a.index(), "type": "qword", "op": op, "val": value})
            })
            .collect();
        let entry = groups.entry(key).or_insert_with(|| (act, Vec::new()));
        for name in rule.names() {
            let mut r = serde_json::json!({ "syscall": name });
            if !args.is_empty() {
                r["args"] = serde_json::Value::Array(args.clone());
            }
            entry.1.push(r.clone());
            all_rules.push(r);
        }
    }
    let mut programs = Vec::new();
    for (act, rules) in groups.into_values() {
        // Calls listed with the default action need no filter of their own, nor do allowed
        // ones: the default filter lets every listed call through (and seccompiler refuses a
        // filter whose match and mismatch actions are both allow).
        if act == default || act == seccompiler::SeccompAction::Allow {
            continue;
        }
        // This filter: listed calls get `act`; the rest are left to the default filter.
        programs.push(compile_group(
            act,
            seccompiler::SeccompAction::Allow,
            rules,
        )?);
    }
    if default != seccompiler::SeccompAction::Allow {
        // The default filter: calls listed with any action pass it; everything else gets
        // the default action.
        let listed: Vec<serde_json::Value> = all_rules;
        programs.push(compile_group(
            seccompiler::SeccompAction::Allow,
            default,
            listed,
        )?);
    }
    Ok(programs)
}

fn compile_group(
    matched: seccompiler::SeccompAction,
    mismatch: seccompiler::SeccompAction,
    mut rules: Vec<serde_json::Value>,
) -> Result<BpfProgram> {
    let act = |a: &seccompiler::SeccompAction| match a {
        seccompiler::SeccompAction::Allow => serde_json::json!("allow"),
        seccompiler::SeccompAction::Errno(e) => serde_json::json!({ "errno": e }),
        seccompiler::SeccompAction::KillThread => serde_json::json!("kill_thread"),
        seccompiler::SeccompAction::KillProcess => serde_json::json!("kill_process"),
        seccompiler::SeccompAction::Log => serde_json::json!("log"),
        seccompiler::SeccompAction::Trace(t) => serde_json::json!({ "trace": t }),
        seccompiler::SeccompAction::Trap => serde_json::json!("trap"),
    };
    let compile = |rules: &[serde_json::Value]| {
        let doc = serde_json::json!({ "f": {
            "mismatch_action": act(&mismatch),
            "match_action": act(&matched),
            "filter": rules,
        }});
        seccompiler::compile_from_json(doc.to_string().as_bytes(), seccompiler::TargetArch::x86_64)
    };
    let mut map = match compile(&rules) {
        Ok(map) => map,
        Err(_) => {
            // seccompiler refuses a whole filter over one name this architecture lacks
            // (its error type is private): keep the rules that compile on their own.
            rules.retain(|r| {
                let ok = compile(std::slice::from_ref(r)).is_ok();
                if !ok {
                    tracing::debug!(rule = %r, "seccomp rule skipped: unknown syscall on x86_64");
                }
                ok
            });
            compile(&rules).map_err(|e| Error::Invalid(format!("seccomp profile: {e}")))?
        }
    };
    map.remove("f")
        .ok_or_else(|| Error::Invalid("seccomp filter missing".into()))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<seccompiler::SeccompAction> {
    use seccompiler::SeccompAction as S;
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => S::Allow,
        LinuxSeccompAction::ScmpActErrno => S::Errno(errno.unwrap_or(libc::EPERM as u32)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => S::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => S::KillProcess,
        LinuxSeccompAction::ScmpActTrap => S::Trap,
        LinuxSeccompAction::ScmpActTrace => S::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => S::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Invalid(
                "seccomp action SCMP_ACT_NOTIFY is not supported".into(),
            ))
        }
    })
}

pub fn apply_seccomp(programs: &[BpfProgram]) -> Result<()> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| Error::Process {
            what: "install seccomp filter".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_capabilities_map_to_the_kernels() {
        let spec: HashSet<oci_spec::runtime::Capability> =
            serde_json::from_value(serde_json::json!([
                "CAP_KILL",
                "CAP_AUDIT_WRITE",
                "SYS_ADMIN"
            ]))
            .unwrap();
        let got = cap_set(Some(&spec)).unwrap();
        let want: CapsHashSet = [
            Capability::CAP_KILL,
            Capability::CAP_AUDIT_WRITE,
            Capability::CAP_SYS_ADMIN,
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn default_profile_compiles_to_one_filter() {
        let programs = compile_seccomp(&default_seccomp()).unwrap();
        assert_eq!(programs.len(), 1);
        assert!(programs[0].len() > 50, "{} instructions", programs[0].len());
    }

    #[test]
    fn allowlist_profiles_get_a_default_filter_and_unknown_names_are_skipped() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["ptrace"], "action": "SCMP_ACT_KILL"},
            ]
        }))
        .unwrap();
        let programs = compile_seccomp(&profile).unwrap();
        // One for ptrace's kill, one default filter (allow entries fold into it).
        assert_eq!(programs.len(), 2);
    }

    #[test]
    fn notify_is_refused_with_a_clear_error() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_NOTIFY"
        }))
        .unwrap();
        let err = compile_seccomp(&profile).unwrap_err().to_string();
        assert!(err.contains("SCMP_ACT_NOTIFY"), "{err}");
    }
}
