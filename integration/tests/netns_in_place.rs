//! `netns::allow_entering_in_place` (the CNI plugin's standalone mode): `run_in` and
//! `spawn_in` enter the namespace on the calling thread and put it back. The switch is
//! for the whole process, hence a test binary of its own. Needs root (skips otherwise).

use std::fs::File;

use integration::fwtest::TestNs;
use integration::ns::{self, inode as ino, thread_id as tid, THREAD_NETNS};
use integration::skip::no_root;
use netd::kernel::netlink::Netlink;
use netd::kernel::netns::{self, InNs};

#[test]
fn entering_in_place_runs_on_the_calling_thread_and_comes_back() {
    if no_root() {
        return;
    }
    netns::allow_entering_in_place();
    let sb = TestNs::create();
    sb.ip(&["link", "add", "ndinplace0", "type", "bridge"]);
    let p = sb.path();
    let home = ino(THREAD_NETNS);
    let me = tid();

    let (inside, on) = netns::run_in(&p, || (ino(THREAD_NETNS), tid())).expect("run_in");
    assert_eq!(inside, ino(&p), "ran inside the namespace");
    assert_eq!(on, me, "on the calling thread");
    assert_eq!(ino(THREAD_NETNS), home, "and came back");

    // A route socket opened in place belongs to the namespace.
    let mut nl = Netlink::open_in(&p).expect("socket in the namespace");
    assert!(nl.link("ndinplace0").expect("lookup").is_some());
    assert_eq!(ino(THREAD_NETNS), home);

    // spawn_in is done before it returns.
    let f = File::open(&p).expect("open namespace");
    std::thread::scope(|s| {
        let h = netns::spawn_in(s, &p, &f, || (ino(THREAD_NETNS), tid()));
        assert!(matches!(h, InNs::Done(_)), "no thread was spawned");
        assert_eq!(netns::join_scoped(&p, h).expect("join"), (ino(&p), me.clone()));
    });
    assert_eq!(ino(THREAD_NETNS), home);

    // A panic inside reaches the caller, who is back home.
    let r = std::panic::catch_unwind(|| netns::run_in(&p, || panic!("inside")));
    assert!(r.is_err());
    assert_eq!(ino(THREAD_NETNS), home);

    // A namespace that is not there: an error, nothing entered.
    let missing = ns::path_of(&ns::unique_name());
    let e = netns::run_in(&missing, || ()).expect_err("missing namespace");
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
    assert_eq!(ino(THREAD_NETNS), home);
}
