//! How netd enters namespaces: the host worker (`NsThread`) starts with its first job
//! and runs every job inside its namespace, on one thread. Needs root (skips
//! otherwise). (Entering on the calling thread, which a process
//! switches on for all its threads, has a test binary of its own: `netns_in_place`.)

use integration::fwtest::TestNs;
use integration::ns::{self, inode as ino, thread_id as tid, THREAD_NETNS};
use integration::skip::no_root;
use netd::kernel::netns::NsThread;

#[test]
fn a_namespace_worker_starts_with_its_first_job_and_runs_every_job_inside() {
    if no_root() {
        return;
    }
    let ns = TestNs::create();
    let w = NsThread::spawn(Some(&ns.path())).expect("worker");
    assert!(!w.started(), "no job yet, no thread");
    let (inside, t1) = w.run(|| (ino(THREAD_NETNS), tid())).expect("first job");
    assert!(w.started());
    assert_eq!(inside, ino(ns.path()), "the job ran inside the namespace");
    assert_ne!(inside, ino(THREAD_NETNS), "the caller stayed where it was");
    let (inside2, t2) = w.run(|| (ino(THREAD_NETNS), tid())).expect("second job");
    assert_eq!((inside2, &t2), (inside, &t1), "the same thread, still inside");
    assert_ne!(t1, tid(), "not the caller's thread");
    // A panicking job is reported; the worker goes on.
    assert!(w.run(|| panic!("job panics")).is_err());
    assert_eq!(w.run(tid).expect("after a panic"), t1);
}

#[test]
fn a_namespace_worker_for_a_missing_namespace_fails_at_once() {
    if no_root() {
        return;
    }
    let missing = ns::path_of(&ns::unique_name());
    let e = NsThread::spawn(Some(&missing)).expect_err("no such namespace");
    assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
}
