//! The receiving end of `--console-socket` (runc's protocol: the terminal's master arrives
//! as an SCM_RIGHTS message on a unix socket), and terminal resizing, for callers such as
//! the node agent that relay a container's terminal.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Accept one connection on `listener` and take the terminal master it sends.
pub fn receive_master(listener: &UnixListener) -> io::Result<OwnedFd> {
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 64];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // Close any extra descriptors sent along.
                for &extra in &fds[1..] {
                    // SAFETY: the kernel just installed these descriptors for us; nobody
                    // else owns them.
                    drop(unsafe { OwnedFd::from_raw_fd(extra) });
                }
                // SAFETY: as above: a fresh descriptor received through SCM_RIGHTS.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "console socket: no descriptor received",
    ))
}

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Set the window size of the terminal `fd` (a master or slave).
pub fn resize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
    unsafe { set_winsize(fd.as_raw_fd(), &ws) }
        .map(drop)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_descriptor_arrives_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let p = path.clone();
        let master_raw = pty.master.as_raw_fd();
        let sender = std::thread::spawn(move || {
            let sock = std::os::unix::net::UnixStream::connect(p).unwrap();
            let fds = [master_raw];
            nix::sys::socket::sendmsg::<()>(
                sock.as_raw_fd(),
                &[io::IoSlice::new(b"x")],
                &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        });
        let got = receive_master(&listener).unwrap();
        sender.join().unwrap();
        use std::os::fd::AsFd;
        resize(got.as_fd(), 40, 100).unwrap();
        let size = {
            nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
            let mut w = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one winsize into the pointer we pass.
            unsafe { get_winsize(pty.slave.as_raw_fd(), &mut w) }.unwrap();
            (w.ws_row, w.ws_col)
        };
        assert_eq!(size, (40, 100));
    }
}
