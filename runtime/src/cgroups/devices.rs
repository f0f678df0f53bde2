//! Device rules (OCI `linux.resources.devices`) reduced to what the kernel enforces, and
//! rendered for either cgroup version. Pure: the drivers in `v1.rs` and `v2.rs` act on it.
//!
//! The rules fold in order, as runc's `devices.Emulator` folds them, into a
//! [`DevicePolicy`]: a default (allow or deny every device) plus exceptions of the other
//! kind, keyed by device type and `major:minor` (either may be a wildcard), each with the
//! accesses (`rwm`) it covers. Folding starts from deny-all. A rule for every type and
//! device with all of `rwm` resets the policy to its own kind; a rule of the default's kind
//! takes its accesses away from the exceptions it covers; a rule of the other kind adds an
//! exception. So a later rule overrides an earlier one, except where it would take access
//! away from part of a broader exception (deny `c 1:3 w` after allow `c *:* rw`): v1's
//! exception list cannot express that hole (the kernel silently ignores it), so the rule
//! is refused rather than let the container believe it is enforced.
//!
//! A request is allowed, as v1's kernel decides it, when the default denies and one
//! exception covers the device and every access asked for, or when the default allows and
//! no exception covers the device and any access asked for.
//!
//! * v1: [`v1_transition`] lists the lines to write to `devices.allow` and `devices.deny`
//!   to move a cgroup from what its `devices.list` shows ([`parse_v1_list`]) to the policy.
//! * v2: [`filter_program`] assembles the equivalent `BPF_PROG_TYPE_CGROUP_DEVICE` program,
//!   as runc's `devicefilter` package does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::bpf::{Insn, Reg};
use super::{DeviceRule, Error, Result};

/// A set of accesses, with the bits the BPF device context uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Access(u8);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    pub const ALL: Access = Access(7);

    fn parse(s: &str) -> Result<Access, String> {
        s.chars().try_fold(Access(0), |acc, c| match c {
            'r' => Ok(acc.union(Access::READ)),
            'w' => Ok(acc.union(Access::WRITE)),
            'm' => Ok(acc.union(Access::MKNOD)),
            other => Err(format!("access {s:?} has {other:?}, not one of rwm")),
        })
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }

    fn intersection(self, other: Access) -> Access {
        Access(self.0 & other.0)
    }

    fn minus(self, other: Access) -> Access {
        Access(self.0 & !other.0)
    }

    fn contains(self, other: Access) -> bool {
        other.minus(self).is_empty()
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [
            (Access::READ, 'r'),
            (Access::WRITE, 'w'),
            (Access::MKNOD, 'm'),
        ] {
            if self.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A device type a cgroup can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Char,
    Block,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::Char => 'c',
            Kind::Block => 'b',
        }
    }

    /// The type in the BPF device context (`BPF_DEVCG_DEV_BLOCK` is 1, `_CHAR` 2).
    pub fn bpf_type(self) -> u32 {
        match self {
            Kind::Block => 1,
            Kind::Char => 2,
        }
    }
}

/// Which devices an exception covers; `None` is any (`*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Devices {
    pub kind: Kind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

impl Devices {
    /// Every device `other` covers is covered by `self`.
    fn covers(&self, other: &Devices) -> bool {
        let num = |mine: Option<u32>, theirs: Option<u32>| mine.is_none() || mine == theirs;
        self.kind == other.kind && num(self.major, other.major) && num(self.minor, other.minor)
    }

    /// Some device is covered by both.
    fn overlaps(&self, other: &Devices) -> bool {
        let num = |a: Option<u32>, b: Option<u32>| a.is_none() || b.is_none() || a == b;
        self.kind == other.kind && num(self.major, other.major) && num(self.minor, other.minor)
    }

    #[cfg(test)]
    fn matches(&self, kind: Kind, major: u32, minor: u32) -> bool {
        self.covers(&Devices {
            kind,
            major: Some(major),
            minor: Some(minor),
        })
    }
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        write!(
            f,
            "{} {}:{}",
            self.kind.letter(),
            num(self.major),
            num(self.minor)
        )
    }
}

/// What the device cgroup enforces: a default and the exceptions to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DevicePolicy {
    pub default_allow: bool,
    pub exceptions: BTreeMap<Devices, Access>,
}

impl DevicePolicy {
    fn all(allow: bool) -> Self {
        DevicePolicy {
            default_allow: allow,
            exceptions: BTreeMap::new(),
        }
    }

    /// Fold `rules` in order, from deny-all. The error names the rule that cannot be had.
    pub fn from_rules(rules: &[DeviceRule]) -> Result<Self, String> {
        let mut policy = DevicePolicy::all(false);
        for (i, rule) in rules.iter().enumerate() {
            policy
                .apply(rule)
                .map_err(|m| format!("device rule {i} ({}): {m}", describe(rule)))?;
        }
        Ok(policy)
    }

    fn apply(&mut self, rule: &DeviceRule) -> Result<(), String> {
        let access = Access::parse(&rule.access)?;
        let major = number(rule.major, "major")?;
        let minor = number(rule.minor, "minor")?;
        let kinds: &[Kind] = match rule.kind {
            'a' if major.is_none() && minor.is_none() && access == Access::ALL => {
                *self = DevicePolicy::all(rule.allow);
                return Ok(());
            }
            // Narrower rules for all types are the same rule for each (v1 has no such
            // exception: it would take `a 1:3 r` as allow-all).
            'a' => &[Kind::Char, Kind::Block],
            'c' => &[Kind::Char],
            'b' => &[Kind::Block],
            other => return Err(format!("device type {other:?} is not a, c or b")),
        };
        if access.is_empty() {
            return Ok(());
        }
        for &kind in kinds {
            let devices = Devices { kind, major, minor };
            if rule.allow == self.default_allow {
                self.take_away(devices, access)?;
            } else {
                let entry = self.exceptions.entry(devices).or_default();
                *entry = entry.union(access);
            }
        }
        Ok(())
    }

    /// Back to the default for `access` on `devices`: out of every exception they cover,
    /// unless an exception they only partly cover has some of it.
    fn take_away(&mut self, devices: Devices, access: Access) -> Result<(), String> {
        let hole = self.exceptions.iter().find(|(other, other_access)| {
            other.overlaps(&devices)
                && !devices.covers(other)
                && !other_access.intersection(access).is_empty()
        });
        if let Some((other, other_access)) = hole {
            return Err(format!(
                "it would take {} away from part of the earlier {} {other} {other_access}, which a \
                 device cgroup cannot express",
                other_access.intersection(access),
                if self.default_allow { "deny" } else { "allow" },
            ));
        }
        self.exceptions.retain(|other, other_access| {
            if devices.covers(other) {
                *other_access = other_access.minus(access);
            }
            !other_access.is_empty()
        });
        Ok(())
    }

    /// Whether a request for `access` on the device `kind major:minor` passes, as the v1
    /// kernel decides it: the reference the tests hold the v2 program and OCI's reading to.
    #[cfg(test)]
    pub fn allows(&self, kind: Kind, major: u32, minor: u32, access: Access) -> bool {
        let mut matching = self
            .exceptions
            .iter()
            .filter(|(d, _)| d.matches(kind, major, minor));
        if self.default_allow {
            !matching.any(|(_, a)| !a.intersection(access).is_empty())
        } else {
            matching.any(|(_, a)| a.contains(access))
        }
    }

    /// Whether a cgroup whose `devices.list` reads as `listed` enforces this policy (the
    /// list shows no exceptions to allow-all, so only the default is compared then).
    pub fn listed_as(&self, listed: &DevicePolicy) -> bool {
        self.default_allow == listed.default_allow
            && (self.default_allow || self.exceptions == listed.exceptions)
    }
}

impl fmt::Display for DevicePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (default, kind) = if self.default_allow {
            ("allow", "deny")
        } else {
            ("deny", "allow")
        };
        write!(f, "{default} all")?;
        for (i, (d, a)) in self.exceptions.iter().enumerate() {
            let sep = if i == 0 { ", but " } else { ", " };
            write!(f, "{sep}{kind} {d} {a}")?;
        }
        Ok(())
    }
}

/// The policy `rules` ask for, or `None` (leave the device cgroup alone) when there are
/// none; an error names `path` and the rule.
pub(super) fn policy(path: &Path, rules: &[DeviceRule]) -> Result<Option<DevicePolicy>> {
    if rules.is_empty() {
        return Ok(None);
    }
    DevicePolicy::from_rules(rules)
        .map(Some)
        .map_err(|m| Error::invalid(path, m))
}

fn number(n: Option<i64>, what: &str) -> Result<Option<u32>, String> {
    match n {
        None => Ok(None),
        // u32::MAX is v1's wildcard.
        Some(n) => match u32::try_from(n) {
            Ok(n) if n != u32::MAX => Ok(Some(n)),
            _ => Err(format!("{what} {n} is out of range")),
        },
    }
}

fn describe(rule: &DeviceRule) -> String {
    let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    format!(
        "{} {} {}:{} {}",
        if rule.allow { "allow" } else { "deny" },
        rule.kind,
        num(rule.major),
        num(rule.minor),
        rule.access
    )
}

/// What a v1 `devices.list` says: `a *:* rwm` for allow-all (whose deny exceptions the
/// kernel does not list), else the allow exceptions of a deny-all cgroup.
pub(super) fn parse_v1_list(text: &str) -> Result<DevicePolicy, String> {
    let mut policy = DevicePolicy::all(false);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = || format!("unexpected line {line:?}");
        let mut fields = line.split_whitespace();
        let (Some(kind), Some(numbers), Some(access), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
        let num = |s: &str| -> Result<Option<u32>, String> {
            match s {
                "*" => Ok(None),
                n => n.parse().map(Some).map_err(|_| bad()),
            }
        };
        let devices = |kind| -> Result<Devices, String> {
            Ok(Devices {
                kind,
                major: num(major)?,
                minor: num(minor)?,
            })
        };
        let access = Access::parse(access)?;
        match kind {
            "a" => return Ok(DevicePolicy::all(true)),
            "c" => policy.exceptions.insert(devices(Kind::Char)?, access),
            "b" => policy.exceptions.insert(devices(Kind::Block)?, access),
            _ => return Err(bad()),
        };
    }
    Ok(policy)
}

/// One line for `devices.allow` (`allow`) or `devices.deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct V1Write {
    pub allow: bool,
    pub line: String,
}

impl V1Write {
    pub fn file(&self) -> &'static str {
        if self.allow {
            "devices.allow"
        } else {
            "devices.deny"
        }
    }
}

impl fmt::Display for V1Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} < {}", self.file(), self.line)
    }
}

/// The writes that take a v1 cgroup listing `current` to `target`, as runc's emulator
/// transitions: a reset (`a`) first when the default changes or the current default is
/// allow (whose exceptions `devices.list` hides), then the accesses to take away from
/// exceptions, then the ones to add. A cgroup already in `target` gets no writes.
pub(super) fn v1_transition(current: &DevicePolicy, target: &DevicePolicy) -> Vec<V1Write> {
    let mut writes = Vec::new();
    let none = BTreeMap::new();
    let mut old = &current.exceptions;
    if current.default_allow || current.default_allow != target.default_allow {
        writes.push(V1Write {
            allow: target.default_allow,
            line: "a".to_string(),
        });
        old = &none;
    }
    let line = |d: &Devices, a: Access| format!("{d} {a}");
    for (d, a) in old {
        let gone = a.minus(target.exceptions.get(d).copied().unwrap_or_default());
        if !gone.is_empty() {
            writes.push(V1Write {
                allow: target.default_allow,
                line: line(d, gone),
            });
        }
    }
    for (d, a) in &target.exceptions {
        let new = a.minus(old.get(d).copied().unwrap_or_default());
        if !new.is_empty() {
            writes.push(V1Write {
                allow: !target.default_allow,
                line: line(d, new),
            });
        }
    }
    writes
}

/// The v2 device filter for `policy`, in the shape of runc's: load the context into
/// `w2` (type), `w3` (access), `w4` (major) and `w5` (minor); then one block per exception
/// that returns the exception's verdict when it matches and otherwise falls through to the
/// next; then return the default.
///
/// An allow exception matches when the request's accesses are a subset of its own, a deny
/// exception when they share any (v1's rules; runc's filter checks the subset for both). Every
/// exception is of the same kind, so their order does not matter.
pub(super) fn filter_program(policy: &DevicePolicy) -> Vec<Insn> {
    use Reg::*;
    let mut prog = vec![
        Insn::load_u32(R2, R1, 0),
        Insn::and32(R2, 0xffff),
        Insn::load_u32(R3, R1, 0),
        Insn::rsh32(R3, 16),
        Insn::load_u32(R4, R1, 4),
        Insn::load_u32(R5, R1, 8),
    ];
    let verdict = !policy.default_allow;
    for (devices, access) in &policy.exceptions {
        // Each conditional jump skips to the end of the block; offsets are set below.
        let mut block = vec![Insn::jne32(R2, devices.kind.bpf_type() as i32, 0)];
        if *access != Access::ALL {
            block.push(Insn::mov32_reg(R1, R3));
            block.push(Insn::and32(R1, i32::from(access.bits())));
            block.push(if verdict {
                Insn::jne32_reg(R1, R3, 0)
            } else {
                Insn::jeq32(R1, 0, 0)
            });
        }
        if let Some(major) = devices.major {
            block.push(Insn::jne32(R4, major as i32, 0));
        }
        if let Some(minor) = devices.minor {
            block.push(Insn::jne32(R5, minor as i32, 0));
        }
        block.push(Insn::mov64(R0, i32::from(verdict)));
        block.push(Insn::exit());
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.is_cond_jump() {
                insn.off = (len - i - 1) as i16;
            }
        }
        prog.extend(block);
    }
    prog.push(Insn::mov64(R0, i32::from(policy.default_allow)));
    prog.push(Insn::exit());
    prog
}

#[cfg(test)]
mod tests {
    use super::super::bpf::{disassemble, run};
    use super::*;
    use rand::Rng;

    fn rule(
        allow: bool,
        kind: char,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: access.into(),
        }
    }

    fn deny_all() -> DeviceRule {
        rule(false, 'a', None, None, "rwm")
    }

    fn allow_all() -> DeviceRule {
        rule(true, 'a', None, None, "rwm")
    }

    fn policy_of(rules: &[DeviceRule]) -> DevicePolicy {
        DevicePolicy::from_rules(rules).unwrap()
    }

    fn shown(p: &DevicePolicy) -> String {
        p.to_string()
    }

    #[test]
    fn container_defaults_are_a_whitelist() {
        let mut rules = vec![deny_all()];
        rules.extend(DeviceRule::defaults());
        assert_eq!(
            shown(&policy_of(&rules)),
            "deny all, but allow c *:* m, allow c 1:3 rwm, allow c 1:5 rwm, allow c 1:7 rwm, \
             allow c 1:8 rwm, allow c 1:9 rwm, allow c 5:0 rwm, allow c 5:2 rwm, \
             allow c 136:* rwm, allow b *:* m"
        );
        // The defaults alone mean the same: folding starts from deny-all.
        assert_eq!(policy_of(&DeviceRule::defaults()), policy_of(&rules));
        // A privileged container's allow-all swallows them.
        let mut privileged = vec![allow_all()];
        privileged.extend(DeviceRule::defaults());
        assert_eq!(shown(&policy_of(&privileged)), "allow all");
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let p = policy_of(&[
            deny_all(),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(false, 'c', Some(1), Some(3), "w"),
        ]);
        assert_eq!(shown(&p), "deny all, but allow c 1:3 rm");
        // A broader deny takes away the narrower allows it covers.
        let p = policy_of(&[
            deny_all(),
            rule(true, 'c', Some(1), Some(3), "r"),
            rule(true, 'c', Some(1), Some(5), "rw"),
            rule(false, 'c', Some(1), None, "r"),
        ]);
        assert_eq!(shown(&p), "deny all, but allow c 1:5 w");
        let p = policy_of(&[
            allow_all(),
            rule(false, 'b', Some(8), None, "w"),
            rule(false, 'c', Some(10), Some(200), "rwm"),
            rule(true, 'c', Some(10), Some(200), "m"),
        ]);
        assert_eq!(shown(&p), "allow all, but deny c 10:200 rw, deny b 8:* w");
        // A reset anywhere forgets what came before.
        let p = policy_of(&[rule(true, 'c', Some(1), Some(3), "rwm"), deny_all()]);
        assert_eq!(shown(&p), "deny all");
        // `a` with less than everything is the same rule for c and b.
        let p = policy_of(&[deny_all(), rule(true, 'a', None, None, "m")]);
        assert_eq!(shown(&p), "deny all, but allow c *:* m, allow b *:* m");
        let p = policy_of(&[rule(true, 'a', Some(7), None, "rwm")]);
        assert_eq!(shown(&p), "deny all, but allow c 7:* rwm, allow b 7:* rwm");
    }

    #[test]
    fn holes_in_broader_exceptions_are_refused() {
        let err = DevicePolicy::from_rules(&[
            deny_all(),
            rule(true, 'c', None, None, "rwm"),
            rule(false, 'c', Some(1), Some(3), "w"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            "device rule 2 (deny c 1:3 w): it would take w away from part of the earlier allow \
             c *:* rwm, which a device cgroup cannot express"
        );
        // Partly overlapping (`*:3` and `1:*`) is a hole too.
        assert!(DevicePolicy::from_rules(&[
            deny_all(),
            rule(true, 'c', None, Some(3), "r"),
            rule(false, 'c', Some(1), None, "r"),
        ])
        .is_err());
        assert!(DevicePolicy::from_rules(&[
            allow_all(),
            rule(false, 'b', Some(8), None, "rw"),
            rule(true, 'b', Some(8), Some(0), "r"),
        ])
        .is_err());
        // No shared access, no hole.
        let p = policy_of(&[
            deny_all(),
            rule(true, 'c', None, None, "m"),
            rule(false, 'c', Some(1), Some(3), "rw"),
        ]);
        assert_eq!(shown(&p), "deny all, but allow c *:* m");
    }

    #[test]
    fn bad_rules_are_named() {
        let cases = [
            (
                rule(true, 'p', None, None, "rwm"),
                "device type 'p' is not a, c or b",
            ),
            (
                rule(true, 'c', Some(1), Some(3), "rx"),
                "access \"rx\" has 'x', not one of rwm",
            ),
            (
                rule(true, 'c', Some(-1), Some(3), "r"),
                "major -1 is out of range",
            ),
            (
                rule(true, 'c', Some(1), Some(1 << 32), "r"),
                "minor 4294967296 is out of range",
            ),
            (
                rule(true, 'c', Some(1), Some(u32::MAX.into()), "r"),
                "minor 4294967295 is out of range",
            ),
        ];
        for (r, want) in cases {
            let err = DevicePolicy::from_rules(&[deny_all(), r]).unwrap_err();
            assert!(err.starts_with("device rule 1 ("), "{err}");
            assert!(err.ends_with(want), "{err}");
        }
        let err = policy(Path::new("berth/c1"), &[rule(true, 'p', None, None, "r")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cgroup berth/c1: device rule 0"),
            "{err}"
        );
        assert_eq!(policy(Path::new("x"), &[]).unwrap(), None);
    }

    #[test]
    fn kernel_semantics_of_a_policy() {
        let p = policy_of(&[
            deny_all(),
            rule(true, 'c', None, None, "m"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'c', Some(4), None, "r"),
            rule(true, 'c', Some(4), Some(1), "w"),
        ]);
        let rw = Access::READ.union(Access::WRITE);
        assert!(p.allows(Kind::Char, 1, 3, rw));
        assert!(p.allows(Kind::Char, 9, 9, Access::MKNOD));
        assert!(!p.allows(Kind::Char, 9, 9, Access::READ));
        assert!(!p.allows(Kind::Block, 1, 3, Access::READ));
        assert!(p.allows(Kind::Char, 4, 1, Access::WRITE));
        // One exception must cover every access asked for, as in v1.
        assert!(!p.allows(Kind::Char, 4, 1, rw));

        let p = policy_of(&[allow_all(), rule(false, 'b', Some(8), None, "w")]);
        assert!(p.allows(Kind::Block, 8, 0, Access::READ));
        assert!(!p.allows(Kind::Block, 8, 0, rw), "any denied access denies");
        assert!(p.allows(Kind::Char, 8, 0, rw));
    }

    #[test]
    fn v1_list_parses() {
        assert_eq!(shown(&parse_v1_list("a *:* rwm\n").unwrap()), "allow all");
        assert_eq!(shown(&parse_v1_list("").unwrap()), "deny all");
        let p = parse_v1_list("c 1:3 rwm\nc *:* m\nb 8:* rw\n").unwrap();
        assert_eq!(
            shown(&p),
            "deny all, but allow c *:* m, allow c 1:3 rwm, allow b 8:* rw"
        );
        for bad in [
            "c 1:3",
            "c 1-3 rwm",
            "x 1:3 rwm",
            "c 1:3 rwx",
            "c one:3 r",
            "c 1:3 r extra",
        ] {
            assert!(parse_v1_list(bad).is_err(), "{bad}");
        }
    }

    fn writes(current: &DevicePolicy, target: &DevicePolicy) -> Vec<String> {
        v1_transition(current, target)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn v1_transitions() {
        let fresh = parse_v1_list("a *:* rwm\n").unwrap();
        let target = policy_of(&[deny_all(), rule(true, 'c', Some(1), Some(3), "rwm")]);
        assert_eq!(
            writes(&fresh, &target),
            ["devices.deny < a", "devices.allow < c 1:3 rwm"]
        );
        // Already there: nothing to write.
        let listed = parse_v1_list("c 1:3 rwm\n").unwrap();
        assert!(target.listed_as(&listed));
        assert!(writes(&listed, &target).is_empty());
        // Within a whitelist, only the differences, removals first.
        let next = policy_of(&[
            deny_all(),
            rule(true, 'c', Some(1), Some(3), "r"),
            rule(true, 'c', Some(1), Some(5), "rwm"),
        ]);
        assert_eq!(
            writes(&listed, &next),
            ["devices.deny < c 1:3 wm", "devices.allow < c 1:5 rwm"]
        );
        // To a blacklist: reset to allow, then the denies.
        let black = policy_of(&[allow_all(), rule(false, 'b', Some(8), None, "w")]);
        assert_eq!(
            writes(&listed, &black),
            ["devices.allow < a", "devices.deny < b 8:* w"]
        );
        // From allow-all the exceptions are unknown: always a reset.
        assert_eq!(
            writes(&fresh, &black),
            ["devices.allow < a", "devices.deny < b 8:* w"]
        );
        assert_eq!(
            writes(&fresh, &DevicePolicy::all(true)),
            ["devices.allow < a"]
        );
        assert!(DevicePolicy::all(true).listed_as(&fresh));
        assert!(!target.listed_as(&fresh));
        assert!(!target.listed_as(&parse_v1_list("c 1:3 rw\n").unwrap()));
    }

    #[test]
    fn filter_for_a_whitelist() {
        let p = policy_of(&[
            deny_all(),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'b', None, None, "m"),
            rule(true, 'c', Some(136), None, "rw"),
        ]);
        assert_eq!(
            disassemble(&filter_program(&p)),
            "\
r2 = *(u32 *)(r1 + 0)
w2 &= 0xffff
r3 = *(u32 *)(r1 + 0)
w3 >>= 16
r4 = *(u32 *)(r1 + 4)
r5 = *(u32 *)(r1 + 8)
if w2 != 2 goto +4
if w4 != 1 goto +3
if w5 != 3 goto +2
r0 = 1
exit
if w2 != 2 goto +6
w1 = w3
w1 &= 0x6
if w1 != w3 goto +3
if w4 != 136 goto +2
r0 = 1
exit
if w2 != 1 goto +5
w1 = w3
w1 &= 0x1
if w1 != w3 goto +2
r0 = 1
exit
r0 = 0
exit
"
        );
    }

    #[test]
    fn filter_for_a_blacklist_and_for_everything() {
        let p = policy_of(&[allow_all(), rule(false, 'b', Some(8), None, "w")]);
        assert_eq!(
            disassemble(&filter_program(&p)[6..]),
            "\
if w2 != 1 goto +6
w1 = w3
w1 &= 0x4
if w1 == 0 goto +3
if w4 != 8 goto +2
r0 = 0
exit
r0 = 1
exit
"
        );
        assert_eq!(
            disassemble(&filter_program(&policy_of(&[allow_all()]))[6..]),
            "r0 = 1\nexit\n"
        );
        assert_eq!(
            disassemble(&filter_program(&policy_of(&[deny_all()]))[6..]),
            "r0 = 0\nexit\n"
        );
    }

    /// OCI's reading of a rule list for one access: the last rule that matches decides;
    /// none is deny.
    fn oci_allows(rules: &[DeviceRule], kind: Kind, major: u32, minor: u32, bit: Access) -> bool {
        rules
            .iter()
            .rev()
            .find(|r| {
                let num = |n: Option<i64>, v: u32| n.is_none_or(|n| n == i64::from(v));
                (r.kind == 'a' || r.kind == kind.letter())
                    && num(r.major, major)
                    && num(r.minor, minor)
                    && Access::parse(&r.access).unwrap().contains(bit)
            })
            .is_some_and(|r| r.allow)
    }

    fn random_rules(rng: &mut impl Rng) -> Vec<DeviceRule> {
        let mut rules = Vec::new();
        if rng.gen_bool(0.8) {
            rules.push(if rng.gen_bool(0.5) {
                deny_all()
            } else {
                allow_all()
            });
        }
        for _ in 0..rng.gen_range(0..7) {
            let kind = ['a', 'c', 'b', 'c'][rng.gen_range(0..4)];
            let mut num = || match rng.gen_range(0..3) {
                0 => None,
                n => Some(n),
            };
            let (major, minor) = (num(), num());
            let access = ["r", "w", "m", "rw", "rm", "wm", "rwm"][rng.gen_range(0..7)];
            rules.push(rule(rng.gen_bool(0.5), kind, major, minor, access));
        }
        rules
    }

    /// Every accepted rule list means, access by access, what OCI says it means; the v1
    /// policy and the v2 program agree on every request (the program run in an
    /// interpreter); and the kernel's list of a policy parses back to it.
    #[test]
    fn policy_program_and_oci_agree_on_random_rules() {
        let mut rng = rand::thread_rng();
        let singles = [Access::READ, Access::WRITE, Access::MKNOD];
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let rules = random_rules(&mut rng);
            let Ok(p) = DevicePolicy::from_rules(&rules) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let prog = filter_program(&p);
            for kind in [Kind::Char, Kind::Block] {
                for major in 0..4 {
                    for minor in 0..4 {
                        for bit in singles {
                            assert_eq!(
                                p.allows(kind, major, minor, bit),
                                oci_allows(&rules, kind, major, minor, bit),
                                "{rules:?} -> {p} on {kind:?} {major}:{minor} {bit}"
                            );
                        }
                        for access in 1..8 {
                            let ctx = [(access << 16) | kind.bpf_type(), major, minor];
                            let want = p.allows(kind, major, minor, Access(access as u8));
                            assert_eq!(
                                run(&prog, ctx),
                                Some(u64::from(want)),
                                "{p} on {ctx:?}\n{}",
                                disassemble(&prog)
                            );
                        }
                    }
                }
            }
            if !p.default_allow {
                let list: String = p
                    .exceptions
                    .iter()
                    .map(|(d, a)| format!("{d} {a}\n"))
                    .collect();
                assert_eq!(parse_v1_list(&list).unwrap(), p);
            }
        }
        assert!(
            accepted > 1000 && refused > 50,
            "{accepted} accepted, {refused} refused"
        );
    }

    /// The kernel's verifier takes the programs (root only: loading needs CAP_BPF).
    #[test]
    fn the_verifier_accepts_the_filters() {
        if !nix::unistd::geteuid().is_root() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("the_verifier_accepts_the_filters: skipped: not root");
            }
            return;
        }
        let mut defaults = vec![deny_all()];
        defaults.extend(DeviceRule::defaults());
        let lists = [
            defaults,
            vec![allow_all()],
            vec![deny_all()],
            vec![
                allow_all(),
                rule(false, 'b', Some(8), None, "w"),
                rule(false, 'c', Some(1), Some(5), "rwm"),
            ],
            vec![deny_all(), rule(true, 'c', Some(4_000_000_000), None, "r")],
        ];
        for rules in lists {
            let prog = filter_program(&policy_of(&rules));
            if let Err((err, log)) = super::super::bpf::verify(&prog) {
                panic!("{rules:?}: {err}\n{log}\n{}", disassemble(&prog));
            }
        }
    }
}
