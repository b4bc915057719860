//! Link lookups that never wait for RTNL.
//!
//! RTM_GETLINK is served under RTNL, which a link deletion holds while it waits for RCU
//! (`synchronize_net`): behind the deletion a short-lived process started just before
//! (netd-cni's detached DEL), a lookup returned 10–40 ms later in 4–5 of 100 DELs here.
//! The device ioctls read the namespace's device table under RCU instead, and cost a
//! few microseconds whatever the number of links (`/proc/net/dev`, also RCU, formats
//! every device's counters). Any socket works; the namespace is the socket's.

use std::ffi::CStr;
use std::os::fd::AsRawFd;

use super::{KernelError, Netlink};

impl Netlink {
    /// The index of link `name` in this socket's namespace (SIOCGIFINDEX), `None` if
    /// there is none. On a kernel with loadable modules a missing name first makes the
    /// kernel try to load a module of that name (`dev_load`), as `ifconfig NAME` does:
    /// for checking links that are expected to exist.
    pub fn index_rcu(&self, name: &str) -> Result<Option<u32>, KernelError> {
        let op = || format!("look up link {name}");
        let mut req = ifreq_named(name).ok_or_else(|| KernelError::Netlink {
            op: op(),
            errno: Some(nix::errno::Errno::ENAMETOOLONG),
            msg: "name too long".into(),
        })?;
        // SAFETY: SIOCGIFINDEX reads the name and writes the index into our ifreq.
        if unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) } < 0 {
            return absent_or(op());
        }
        // SAFETY: SIOCGIFINDEX answered in the ifindex member.
        Ok(Some(unsafe { req.ifr_ifru.ifru_ifindex } as u32))
    }

    /// The name of the link with `index` in this socket's namespace (SIOCGIFNAME),
    /// `None` once there is none.
    pub fn name_rcu(&self, index: u32) -> Result<Option<String>, KernelError> {
        // SAFETY: all-zero is a valid ifreq.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_ifru.ifru_ifindex = index as libc::c_int;
        // SAFETY: SIOCGIFNAME reads the index and writes the name into our ifreq.
        if unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCGIFNAME, &mut req) } < 0 {
            return absent_or(format!("look up link #{index}"));
        }
        // SAFETY: the kernel wrote a NUL-terminated name of at most IFNAMSIZ bytes.
        let name = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) };
        Ok(Some(name.to_string_lossy().into_owned()))
    }
}

/// An ifreq naming `name`, or `None` if it does not fit.
fn ifreq_named(name: &str) -> Option<libc::ifreq> {
    if name.len() >= libc::IFNAMSIZ || name.as_bytes().contains(&0) {
        return None;
    }
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    Some(req)
}

/// ENODEV: no such link; any other error is one.
fn absent_or<T>(op: String) -> Result<Option<T>, KernelError> {
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENODEV) {
        return Ok(None);
    }
    Err(KernelError::Netlink {
        op,
        errno: e.raw_os_error().map(nix::errno::Errno::from_raw),
        msg: e.to_string(),
    })
}
