//! `berth-pause`: PID 1 of a pod's sandbox.
//!
//! It holds the pod's namespaces open, reaps every zombie that is re-parented to it, exits 0 on
//! SIGTERM or SIGINT, and otherwise sleeps. `runtime/build.rs` compiles this file with `rustc`
//! directly into a static binary that the runtime embeds (`berth_runtime::pause::PAUSE_BINARY`).
//!
//! To stay a few kilobytes rather than a megabyte (static glibc alone is ~700 KiB), it uses
//! neither std nor libc: its own `_start`, raw x86_64 Linux syscalls, no allocation. Instead of
//! signal handlers (which need an `sa_restorer` trampoline without libc) it blocks SIGCHLD,
//! SIGTERM and SIGINT and waits for them with `rt_sigtimedwait`, as tini does. Blocked signals
//! are queued even for the init of a PID namespace, which drops signals it has no handler for.

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::panic::PanicInfo;
use core::ptr;

const SYS_WRITE: usize = 1;
const SYS_RT_SIGPROCMASK: usize = 14;
const SYS_WAIT4: usize = 61;
const SYS_RT_SIGTIMEDWAIT: usize = 128;
const SYS_EXIT_GROUP: usize = 231;

const SIGINT: usize = 2;
const SIGTERM: usize = 15;
const SIGCHLD: usize = 17;
const SIG_BLOCK: usize = 0;
const WNOHANG: usize = 1;
/// The kernel's `sigset_t` is 64 bits on x86_64.
const SIGSET_SIZE: usize = 8;

global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym pause_main,
);

/// Issues a raw Linux syscall with up to four arguments and returns the kernel's result
/// (a negative errno on failure).
///
/// # Safety
///
/// The arguments must be valid for syscall `nr`: any pointer among them must point to memory
/// that the kernel may read or write as that syscall does.
unsafe fn syscall4(nr: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux syscall ABI: number in rax, arguments in rdi, rsi, rdx, r10;
    // the kernel clobbers rcx and r11 and returns in rax. The caller vouches for the arguments.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn exit(code: usize) -> ! {
    // SAFETY: exit_group takes no pointers and never returns, so control cannot fall through.
    unsafe {
        asm!(
            "syscall",
            in("rax") SYS_EXIT_GROUP,
            in("rdi") code,
            options(noreturn, nostack),
        )
    }
}

fn die(msg: &[u8]) -> ! {
    // SAFETY: `msg` is a live slice, valid for reads of `msg.len()` bytes. A failed write is
    // ignored on purpose: there is nowhere else to report it.
    unsafe { syscall4(SYS_WRITE, 2, msg.as_ptr() as usize, msg.len(), 0) };
    exit(1)
}

/// Reaps every child that has exited, without blocking.
fn reap() {
    // SAFETY: wait4 with null status and rusage pointers writes no memory of ours; WNOHANG
    // makes it return 0 when no child has exited yet and -ECHILD when there is none.
    while unsafe { syscall4(SYS_WAIT4, usize::MAX, 0, WNOHANG, 0) } > 0 {}
}

extern "C" fn pause_main() -> ! {
    let set: u64 = [SIGCHLD, SIGTERM, SIGINT].iter().fold(0, |s, n| s | 1 << (n - 1));
    let set_ptr = ptr::addr_of!(set) as usize;
    // SAFETY: `set` is a live 8-byte sigset for the kernel to read; the old set is not asked for.
    if unsafe { syscall4(SYS_RT_SIGPROCMASK, SIG_BLOCK, set_ptr, 0, SIGSET_SIZE) } < 0 {
        die(b"berth-pause: blocking signals failed\n");
    }
    loop {
        // Children that exited before, or whose SIGCHLDs were merged into one.
        reap();
        // SAFETY: `set` is a live 8-byte sigset for the kernel to read; null info and timeout
        // pointers mean "no siginfo wanted" and "wait without a time limit".
        let sig = unsafe { syscall4(SYS_RT_SIGTIMEDWAIT, set_ptr, 0, 0, SIGSET_SIZE) };
        if sig == SIGTERM as isize || sig == SIGINT as isize {
            exit(0);
        }
        // SIGCHLD, or -EINTR after a stop and continue: reap at the top of the loop.
    }
}

/// Never called (panics abort), but precompiled `core` refers to it when the linker does not
/// drop the unused unwinding code, as in unoptimised builds.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    die(b"berth-pause: panic\n")
}
