//! Just enough eBPF for v2 device filters: the instructions [`super::devices`] assembles,
//! and the `bpf(2)` calls that load a `BPF_PROG_TYPE_CGROUP_DEVICE` program and attach it
//! to, find it on, or detach it from a cgroup directory.
//!
//! [`DeviceFilterHost`] is the seam: [`KernelBpf`] makes the system calls; tests use
//! `FakeBpf`. A program is attached with `BPF_F_ALLOW_MULTI` and its file descriptor closed
//! at once (the attachment keeps it alive until it is detached or the cgroup is removed);
//! berth knows its own programs again by their name, [`PROG_NAME`].

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tracing::debug;

use super::{Error, Result};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Insn {
    pub code: u8,
    /// Destination register in the low nibble, source in the high one (little-endian
    /// bitfields; swapped on big-endian hosts).
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// The registers a device filter uses. `R1` holds the context on entry, `R0` the verdict on
/// exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Reg {
    R0 = 0,
    R1 = 1,
    R2 = 2,
    R3 = 3,
    R4 = 4,
    R5 = 5,
}

// Instruction classes and operations (linux/bpf_common.h, linux/bpf.h).
pub(super) const CLASS_LDX: u8 = 0x01;
pub(super) const CLASS_ALU: u8 = 0x04;
pub(super) const CLASS_JMP: u8 = 0x05;
pub(super) const CLASS_JMP32: u8 = 0x06;
pub(super) const CLASS_ALU64: u8 = 0x07;
pub(super) const SIZE_W: u8 = 0x00;
pub(super) const MODE_MEM: u8 = 0x60;
pub(super) const SRC_K: u8 = 0x00;
pub(super) const SRC_X: u8 = 0x08;
pub(super) const OP_AND: u8 = 0x50;
pub(super) const OP_RSH: u8 = 0x70;
pub(super) const OP_MOV: u8 = 0xb0;
pub(super) const OP_JEQ: u8 = 0x10;
pub(super) const OP_JNE: u8 = 0x50;
pub(super) const OP_EXIT: u8 = 0x90;

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Self {
        let (dst, src) = (dst as u8, src as u8);
        let regs = if cfg!(target_endian = "little") {
            dst | (src << 4)
        } else {
            (dst << 4) | src
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    #[cfg(test)]
    pub fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    #[cfg(test)]
    pub fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }

    /// `dst = *(u32 *)(src + off)`
    pub fn load_u32(dst: Reg, src: Reg, off: i16) -> Self {
        Insn::new(CLASS_LDX | MODE_MEM | SIZE_W, dst, src, off, 0)
    }

    /// `wdst &= imm`
    pub fn and32(dst: Reg, imm: i32) -> Self {
        Insn::new(CLASS_ALU | OP_AND | SRC_K, dst, Reg::R0, 0, imm)
    }

    /// `wdst >>= imm`
    pub fn rsh32(dst: Reg, imm: i32) -> Self {
        Insn::new(CLASS_ALU | OP_RSH | SRC_K, dst, Reg::R0, 0, imm)
    }

    /// `wdst = wsrc`
    pub fn mov32_reg(dst: Reg, src: Reg) -> Self {
        Insn::new(CLASS_ALU | OP_MOV | SRC_X, dst, src, 0, 0)
    }

    /// `dst = imm`
    pub fn mov64(dst: Reg, imm: i32) -> Self {
        Insn::new(CLASS_ALU64 | OP_MOV | SRC_K, dst, Reg::R0, 0, imm)
    }

    /// `if wdst != imm goto +off`
    pub fn jne32(dst: Reg, imm: i32, off: i16) -> Self {
        Insn::new(CLASS_JMP32 | OP_JNE | SRC_K, dst, Reg::R0, off, imm)
    }

    /// `if wdst != wsrc goto +off`
    pub fn jne32_reg(dst: Reg, src: Reg, off: i16) -> Self {
        Insn::new(CLASS_JMP32 | OP_JNE | SRC_X, dst, src, off, 0)
    }

    /// `if wdst == imm goto +off`
    pub fn jeq32(dst: Reg, imm: i32, off: i16) -> Self {
        Insn::new(CLASS_JMP32 | OP_JEQ | SRC_K, dst, Reg::R0, off, imm)
    }

    pub fn exit() -> Self {
        Insn::new(CLASS_JMP | OP_EXIT, Reg::R0, Reg::R0, 0, 0)
    }

    /// A conditional jump (the kind [`super::devices`] points at the next rule).
    pub fn is_cond_jump(&self) -> bool {
        self.code & 0x07 == CLASS_JMP32
    }
}

/// The name berth loads its device filters with (at most 15 bytes: `BPF_OBJ_NAME_LEN`).
pub(super) const PROG_NAME: &str = "berth_devices";

/// The kernel's side of v2 device filters: the programs attached to cgroup directories.
pub(super) trait DeviceFilterHost: Send + Sync + std::fmt::Debug {
    /// Load `prog` as a device filter and attach it to `dir`, beside any attached already.
    fn attach(&self, dir: &Path, prog: &[Insn]) -> Result<()>;
    /// Ids of the device filters berth attached to `dir` itself (not to its parents).
    fn attached(&self, dir: &Path) -> Result<Vec<u32>>;
    /// Detach the program `id` from `dir`; one gone already is not an error.
    fn detach(&self, dir: &Path, id: u32) -> Result<()>;
}

/// Replace berth's device filter on `dir` with `prog`. The new one is attached before the
/// old ones are detached, so there is no moment without a filter (while both are attached,
/// an access must pass both).
pub(super) fn replace_filter(host: &dyn DeviceFilterHost, dir: &Path, prog: &[Insn]) -> Result<()> {
    let old = host.attached(dir)?;
    host.attach(dir, prog)?;
    for id in old {
        host.detach(dir, id)?;
    }
    debug!(dir = %dir.display(), insns = prog.len(), "device filter attached");
    Ok(())
}

// bpf(2) commands, types and flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

const LICENSE: &CStr = c"Apache";

/// How much of the verifier's log a failed load reports.
const LOG_SIZE: usize = 64 * 1024;

/// Device filters through the `bpf(2)` system call.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KernelBpf;

impl DeviceFilterHost for KernelBpf {
    fn attach(&self, dir: &Path, prog: &[Insn]) -> Result<()> {
        let cgroup = open_dir(dir)?;
        let prog_fd = load(prog).map_err(|(source, log)| {
            let op = match log.lines().rev().find(|l| !l.trim().is_empty()) {
                Some(last) => format!("BPF_PROG_LOAD of the device filter (verifier: {last})"),
                None => "BPF_PROG_LOAD of the device filter".to_string(),
            };
            if !log.is_empty() {
                debug!(dir = %dir.display(), %log, "device filter rejected");
            }
            bpf_err(dir, op, source)
        })?;
        let mut attr = AttachAttr {
            target_fd: raw(cgroup.as_raw_fd()),
            attach_bpf_fd: raw(prog_fd.as_raw_fd()),
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: BPF_F_ALLOW_MULTI,
            replace_bpf_fd: 0,
        };
        // SAFETY: `AttachAttr` is the BPF_PROG_ATTACH member of `union bpf_attr` (no padding,
        // no addresses); both descriptors are open for the call.
        unsafe { sys_bpf(BPF_PROG_ATTACH, &mut attr) }
            .map_err(|e| bpf_err(dir, "BPF_PROG_ATTACH", e))?;
        // `prog_fd` closes here; the attachment holds the program.
        Ok(())
    }

    fn attached(&self, dir: &Path) -> Result<Vec<u32>> {
        let cgroup = open_dir(dir)?;
        let ids = query(cgroup.as_fd()).map_err(|e| bpf_err(dir, "BPF_PROG_QUERY", e))?;
        let mut ours = Vec::new();
        for id in ids {
            let fd = match prog_fd_by_id(id) {
                Ok(fd) => fd,
                // Detached and freed since the query.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(bpf_err(dir, format!("BPF_PROG_GET_FD_BY_ID {id}"), e)),
            };
            let info = prog_info(fd.as_fd())
                .map_err(|e| bpf_err(dir, format!("BPF_OBJ_GET_INFO_BY_FD of program {id}"), e))?;
            if info.prog_type == BPF_PROG_TYPE_CGROUP_DEVICE && info.name() == PROG_NAME.as_bytes()
            {
                ours.push(id);
            } else {
                debug!(dir = %dir.display(), id, "leaving a device filter berth did not attach");
            }
        }
        Ok(ours)
    }

    fn detach(&self, dir: &Path, id: u32) -> Result<()> {
        let cgroup = open_dir(dir)?;
        let prog = match prog_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(bpf_err(dir, format!("BPF_PROG_GET_FD_BY_ID {id}"), e)),
        };
        let mut attr = AttachAttr {
            target_fd: raw(cgroup.as_raw_fd()),
            attach_bpf_fd: raw(prog.as_raw_fd()),
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: 0,
            replace_bpf_fd: 0,
        };
        // SAFETY: `AttachAttr` is the BPF_PROG_DETACH member of `union bpf_attr` (no padding,
        // no addresses); both descriptors are open for the call.
        match unsafe { sys_bpf(BPF_PROG_DETACH, &mut attr) } {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(bpf_err(dir, format!("BPF_PROG_DETACH of program {id}"), e)),
        }
    }
}

fn bpf_err(dir: &Path, op: impl Into<String>, source: io::Error) -> Error {
    Error::Bpf {
        path: dir.to_path_buf(),
        op: op.into(),
        source,
    }
}

/// A file descriptor as the `__u32` field `union bpf_attr` wants.
fn raw(fd: i32) -> u32 {
    u32::try_from(fd).unwrap_or(u32::MAX)
}

fn open_dir(dir: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| Error::io(dir, e))
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
///
/// `T` must be laid out as (a prefix of) the member of the kernel's `union bpf_attr` for
/// `cmd`, with no padding bytes, and every address it holds must point at memory valid for
/// what `cmd` reads or writes there, for the duration of the call.
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i32> {
    let size = std::mem::size_of::<T>() as libc::c_long;
    // SAFETY: `attr` is valid for reads and writes of `size` bytes; the caller vouches for its
    // layout and for the addresses inside it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH, up to `replace_bpf_fd`.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `union bpf_attr` for BPF_PROG_QUERY, up to `prog_cnt` and the padding after it.
#[repr(C)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_prog_info` up to `name`.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

impl ProgInfo {
    fn name(&self) -> &[u8] {
        let end = self.name.iter().position(|b| *b == 0).unwrap_or(16);
        &self.name[..end]
    }
}

/// Load `prog`; on failure the error and, when the verifier said anything, its log.
fn load(prog: &[Insn]) -> std::result::Result<OwnedFd, (io::Error, String)> {
    match load_with_log(prog, &mut []) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Again with a log, for the reason.
            let mut log = vec![0u8; LOG_SIZE];
            let _ = load_with_log(prog, &mut log);
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err((first, String::from_utf8_lossy(&log[..end]).into_owned()))
        }
    }
}

fn load_with_log(prog: &[Insn], log: &mut [u8]) -> io::Result<OwnedFd> {
    let too_big = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let mut prog_name = [0u8; 16];
    prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME.as_bytes());
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(prog.len()).map_err(too_big)?,
        insns: prog.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: u32::try_from(log.len()).map_err(too_big)?,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `ProgLoadAttr` is the BPF_PROG_LOAD member of `union bpf_attr` (all fields
    // naturally aligned, no padding); `insns` points at `insn_cnt` instructions of 8 bytes,
    // `license` at a NUL-terminated string and `log_buf` (when set) at `log_size` writable
    // bytes, all of which outlive the call.
    let fd = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) }?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Ids of the device programs attached to the cgroup `cgroup` itself.
fn query(cgroup: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 8];
    for _ in 0..4 {
        let mut attr = QueryAttr {
            target_fd: raw(cgroup.as_raw_fd()),
            attach_type: BPF_CGROUP_DEVICE,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            pad: 0,
        };
        // SAFETY: `QueryAttr` is the BPF_PROG_QUERY member of `union bpf_attr` up to the
        // padding after `prog_cnt` (no implicit padding); `prog_ids` points at `prog_cnt`
        // writable u32s that outlive the call.
        match unsafe { sys_bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // Too many to fit: `prog_cnt` now says how many there are.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                ids = vec![0u32; (attr.prog_cnt as usize).max(ids.len() * 2)];
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOSPC))
}

fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdAttr {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: `GetFdAttr` is the BPF_PROG_GET_FD_BY_ID member of `union bpf_attr` (no padding,
    // no addresses).
    let fd = unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }?;
    // SAFETY: a successful BPF_PROG_GET_FD_BY_ID returns a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn prog_info(prog: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: raw(prog.as_raw_fd()),
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    // SAFETY: `InfoAttr` is the BPF_OBJ_GET_INFO_BY_FD member of `union bpf_attr` (no
    // padding); `info` points at `info_len` writable bytes laid out as the start of
    // `struct bpf_prog_info`, whose pointer fields are zero so the kernel copies nothing more.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info)
}

/// Whether the kernel's verifier accepts `prog` as a device filter (loaded, then dropped).
#[cfg(test)]
pub(super) fn verify(prog: &[Insn]) -> std::result::Result<(), (io::Error, String)> {
    load(prog).map(drop)
}

/// Device filters kept in memory, for tests of [`replace_filter`] and its callers.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct FakeBpf {
    state: std::sync::Mutex<FakeState>,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct FakeState {
    next_id: u32,
    attached: std::collections::BTreeMap<std::path::PathBuf, Vec<(u32, Vec<Insn>)>>,
    calls: Vec<String>,
}

#[cfg(test)]
impl FakeBpf {
    /// The programs attached to `dir`, oldest first.
    pub fn programs(&self, dir: &Path) -> Vec<(u32, Vec<Insn>)> {
        let s = self.state.lock().unwrap();
        s.attached.get(dir).cloned().unwrap_or_default()
    }

    /// `attach <dir> <id>` and `detach <dir> <id>`, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }
}

#[cfg(test)]
impl DeviceFilterHost for FakeBpf {
    fn attach(&self, dir: &Path, prog: &[Insn]) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.calls.push(format!("attach {} {id}", dir.display()));
        s.attached
            .entry(dir.to_path_buf())
            .or_default()
            .push((id, prog.to_vec()));
        Ok(())
    }

    fn attached(&self, dir: &Path) -> Result<Vec<u32>> {
        Ok(self.programs(dir).into_iter().map(|(id, _)| id).collect())
    }

    fn detach(&self, dir: &Path, id: u32) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("detach {} {id}", dir.display()));
        if let Some(progs) = s.attached.get_mut(dir) {
            progs.retain(|(i, _)| *i != id);
        }
        Ok(())
    }
}

/// Run `prog` on a device context `(access << 16 | type, major, minor)` the way the kernel
/// would, for the instructions this module emits; `None` for anything else (an unknown
/// opcode, a jump out of the program, no exit within a bound).
#[cfg(test)]
pub(super) fn run(prog: &[Insn], ctx: [u32; 3]) -> Option<u64> {
    let mut regs = [0u64; 11];
    let mut pc = 0usize;
    for _ in 0..4096 {
        let insn = prog.get(pc)?;
        let (dst, src) = (usize::from(insn.dst()), usize::from(insn.src()));
        let imm32 = insn.imm as u32;
        let jump = |taken: bool| -> Option<usize> {
            if taken {
                usize::try_from(pc as i64 + 1 + i64::from(insn.off)).ok()
            } else {
                Some(pc + 1)
            }
        };
        pc = match insn.code {
            c if c == CLASS_LDX | MODE_MEM | SIZE_W => {
                if src != 1 || insn.off % 4 != 0 || !(0..12).contains(&insn.off) {
                    return None;
                }
                regs[dst] = u64::from(ctx[insn.off as usize / 4]);
                pc + 1
            }
            c if c == CLASS_ALU | OP_AND | SRC_K => {
                regs[dst] = u64::from(regs[dst] as u32 & imm32);
                pc + 1
            }
            c if c == CLASS_ALU | OP_RSH | SRC_K => {
                regs[dst] = u64::from((regs[dst] as u32) >> imm32);
                pc + 1
            }
            c if c == CLASS_ALU | OP_MOV | SRC_X => {
                regs[dst] = u64::from(regs[src] as u32);
                pc + 1
            }
            c if c == CLASS_ALU64 | OP_MOV | SRC_K => {
                regs[dst] = i64::from(insn.imm) as u64;
                pc + 1
            }
            c if c == CLASS_JMP32 | OP_JNE | SRC_K => jump(regs[dst] as u32 != imm32)?,
            c if c == CLASS_JMP32 | OP_JNE | SRC_X => jump(regs[dst] as u32 != regs[src] as u32)?,
            c if c == CLASS_JMP32 | OP_JEQ | SRC_K => jump(regs[dst] as u32 == imm32)?,
            c if c == CLASS_JMP | OP_EXIT => return Some(regs[0]),
            _ => return None,
        };
    }
    None
}

/// `prog` in the kernel verifier's notation, one instruction a line, decoded from the raw
/// fields (so the tests check the encoding, not just the builders).
#[cfg(test)]
pub(super) fn disassemble(prog: &[Insn]) -> String {
    let mut out = String::new();
    for insn in prog {
        let (d, s, off, imm) = (insn.dst(), insn.src(), insn.off, insn.imm);
        let line = match insn.code {
            c if c == CLASS_LDX | MODE_MEM | SIZE_W => format!("r{d} = *(u32 *)(r{s} + {off})"),
            c if c == CLASS_ALU | OP_AND | SRC_K => format!("w{d} &= {imm:#x}"),
            c if c == CLASS_ALU | OP_RSH | SRC_K => format!("w{d} >>= {imm}"),
            c if c == CLASS_ALU | OP_MOV | SRC_X => format!("w{d} = w{s}"),
            c if c == CLASS_ALU64 | OP_MOV | SRC_K => format!("r{d} = {imm}"),
            c if c == CLASS_JMP32 | OP_JNE | SRC_K => format!("if w{d} != {imm} goto +{off}"),
            c if c == CLASS_JMP32 | OP_JNE | SRC_X => format!("if w{d} != w{s} goto +{off}"),
            c if c == CLASS_JMP32 | OP_JEQ | SRC_K => format!("if w{d} == {imm} goto +{off}"),
            c if c == CLASS_JMP | OP_EXIT => "exit".to_string(),
            c => format!("unknown {c:#04x}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reg::*;

    /// The bytes of one instruction as the kernel reads them.
    fn bytes(insn: Insn) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = insn.code;
        b[1] = insn.regs;
        b[2..4].copy_from_slice(&insn.off.to_le_bytes());
        b[4..].copy_from_slice(&insn.imm.to_le_bytes());
        b
    }

    #[test]
    fn encodings_match_the_kernel_and_llvm() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        // As `llvm-objdump -d` prints them for the same instructions.
        let cases = [
            (Insn::load_u32(R2, R1, 0), [0x61, 0x12, 0, 0, 0, 0, 0, 0]),
            (Insn::load_u32(R4, R1, 4), [0x61, 0x14, 4, 0, 0, 0, 0, 0]),
            (
                Insn::and32(R2, 0xffff),
                [0x54, 0x02, 0, 0, 0xff, 0xff, 0, 0],
            ),
            (Insn::rsh32(R3, 16), [0x74, 0x03, 0, 0, 16, 0, 0, 0]),
            (Insn::mov32_reg(R1, R3), [0xbc, 0x31, 0, 0, 0, 0, 0, 0]),
            (Insn::mov64(R0, 1), [0xb7, 0x00, 0, 0, 1, 0, 0, 0]),
            (Insn::jne32(R2, 2, 5), [0x56, 0x02, 5, 0, 2, 0, 0, 0]),
            (Insn::jne32_reg(R1, R3, 3), [0x5e, 0x31, 3, 0, 0, 0, 0, 0]),
            (Insn::jeq32(R1, 0, 2), [0x16, 0x01, 2, 0, 0, 0, 0, 0]),
            (Insn::exit(), [0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        for (insn, want) in cases {
            assert_eq!(bytes(insn), want, "{}", disassemble(&[insn]));
        }
        assert_eq!(Insn::jne32(R5, -2, 1).imm as u32, u32::MAX - 1);
    }

    #[test]
    fn interpreter_follows_jumps_and_refuses_what_it_does_not_know() {
        let prog = [
            Insn::load_u32(R2, R1, 4),
            Insn::mov64(R0, 0),
            Insn::jne32(R2, 7, 1),
            Insn::mov64(R0, 1),
            Insn::exit(),
        ];
        assert_eq!(run(&prog, [0, 7, 0]), Some(1));
        assert_eq!(run(&prog, [0, 8, 0]), Some(0));
        assert_eq!(run(&[Insn::jne32(R2, 1, 5)], [0; 3]), None, "jump out");
        assert_eq!(
            run(&[Insn::load_u32(R2, R1, 12)], [0; 3]),
            None,
            "read past ctx"
        );
        let unknown = Insn {
            code: 0x0f,
            regs: 0,
            off: 0,
            imm: 0,
        };
        assert_eq!(run(&[unknown], [0; 3]), None);
    }

    #[test]
    fn replace_attaches_before_detaching() {
        let fake = FakeBpf::default();
        let dir = Path::new("/cg/c");
        let a = [Insn::mov64(R0, 0), Insn::exit()];
        let b = [Insn::mov64(R0, 1), Insn::exit()];
        replace_filter(&fake, dir, &a).unwrap();
        replace_filter(&fake, dir, &b).unwrap();
        assert_eq!(
            fake.calls(),
            ["attach /cg/c 1", "attach /cg/c 2", "detach /cg/c 1"]
        );
        assert_eq!(fake.programs(dir), vec![(2, b.to_vec())]);
    }

    #[test]
    fn prog_info_name_stops_at_nul() {
        let mut info = ProgInfo::default();
        info.name[..PROG_NAME.len()].copy_from_slice(PROG_NAME.as_bytes());
        assert_eq!(info.name(), PROG_NAME.as_bytes());
        assert!(PROG_NAME.len() < 16);
        assert_eq!(std::mem::size_of::<ProgInfo>(), 80);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::size_of::<QueryAttr>(), 32);
        assert_eq!(std::mem::size_of::<AttachAttr>(), 20);
    }
}
