//! One plugin invocation: environment + stdin -> stdout + exit code.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backend::delegate::Delegate;
use crate::backend::standalone::{Standalone, DEFAULT_STATE_DIR};
use crate::backend::Netd;
use crate::conf::{self, NetConf};
use crate::env::{self, Command, Env};
use crate::error::{CniError, Result};
use crate::{delegated_ipam, ops, version};

/// What to print and how to exit.
pub struct Outcome {
    pub stdout: Option<Value>,
    pub code: i32,
}

/// Runs one command. Errors come back as the spec's JSON, in the config's version.
pub fn run(get_env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let answer_version = conf::sniff_version(stdin).unwrap_or_else(|| version::CURRENT.to_string());
    match dispatch(get_env, stdin) {
        Ok(v) => Outcome { stdout: v, code: 0 },
        Err(e) => Outcome {
            stdout: Some(e.to_json(&answer_version)),
            code: 1,
        },
    }
}

fn dispatch(get_env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>> {
    let env = env::from_env(get_env)?;
    if env.command == Command::Version {
        return Ok(Some(version::info()));
    }
    if std::env::var_os("NETD_CNI_TIMING").is_some() {
        // The engine logs per operation how long kernel, nft and store took.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("netd::engine=debug"))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let t0 = Instant::now();
    let conf = conf::parse(stdin)?;
    let mut timings = vec![("parse", t0.elapsed())];
    let res = match &conf.socket {
        Some(sock) => {
            let mut d = Delegate::new(sock);
            if env.command == Command::Status {
                d.health()?;
            }
            let t = Instant::now();
            let r = command(&mut d, &conf, &env, stdin, &mut timings);
            timings.push(("api_calls", t.elapsed().saturating_sub(ipam_time(&timings))));
            r
        }
        None => {
            let dir = conf
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
            let mut s = match Standalone::open(&dir) {
                Ok(s) => s,
                // Another netd manages this namespace (code 7, `EngineError::Foreign`):
                // a container this stateDir never attached has nothing here to delete,
                // and a runtime calls DEL after every failed ADD.
                Err(e)
                    if e.code == crate::error::code::INVALID_CONFIG
                        && env.command == Command::Del
                        && !crate::backend::standalone::holds(
                            &dir,
                            &crate::ops::sandbox_name(&env.container_id),
                        ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            timings.extend(s.timings.iter().copied());
            let t = Instant::now();
            let r = command(&mut s, &conf, &env, stdin, &mut timings);
            timings.push(("operation", t.elapsed().saturating_sub(ipam_time(&timings))));
            let t = Instant::now();
            // Closing waits for queued link deletions (the engine's reaper) and the lock.
            drop(s);
            timings.push(("close", t.elapsed()));
            r
        }
    };
    // `NETD_CNI_TIMING=1`: where the time of this exec went, on stderr (bench/cni.sh).
    if std::env::var_os("NETD_CNI_TIMING").is_some() {
        let parts: Vec<String> = timings
            .iter()
            .map(|(k, d)| format!("{k}_us={}", d.as_micros()))
            .collect();
        eprintln!("netd-cni timing: {:?} {}", env.command, parts.join(" "));
    }
    res
}

/// Time spent executing the delegated IPAM plugin (`ipam_exec`), not netd's work.
fn ipam_time(timings: &[(&'static str, Duration)]) -> Duration {
    timings
        .iter()
        .filter(|(k, _)| *k == "ipam_exec")
        .map(|(_, d)| *d)
        .sum()
}

fn command(
    b: &mut dyn Netd,
    conf: &NetConf,
    env: &Env,
    stdin: &[u8],
    timings: &mut Vec<(&'static str, Duration)>,
) -> Result<Option<Value>> {
    let Some(plugin) = delegated_ipam::plugin(conf) else {
        return netd_command(b, conf, env);
    };
    let mut ipam = |cmd: &str| {
        let t = Instant::now();
        let r = delegated_ipam::exec(plugin, cmd, env, stdin);
        timings.push(("ipam_exec", t.elapsed()));
        r
    };
    match env.command {
        Command::Add => {
            let res = ipam("ADD")?.unwrap_or_default();
            let done = delegated_ipam::addresses(&res).and_then(|a| {
                let routes = delegated_ipam::routes(&res);
                netd_command(b, &delegated_ipam::with_addresses(conf, &a, routes), env)
            });
            if done.is_err() {
                // Hand the addresses back: a failed ADD leaves nothing, in netd or in the IPAM plugin.
                let _ = ipam("DEL");
            }
            done
        }
        Command::Del => {
            let r = netd_command(b, conf, env);
            ipam("DEL")?;
            r
        }
        // CNI 1.1: a plugin that delegates IPAM hands GC and STATUS on to the IPAM
        // plugin too (after its own: GC releases netd's side first).
        Command::Gc | Command::Status => {
            netd_command(b, conf, env)?;
            let cmd = if env.command == Command::Gc {
                "GC"
            } else {
                "STATUS"
            };
            ipam(cmd).map(|_| None)
        }
        _ => netd_command(b, conf, env),
    }
}

fn netd_command(b: &mut dyn Netd, conf: &NetConf, env: &Env) -> Result<Option<Value>> {
    match env.command {
        Command::Add => ops::add(b, conf, env).map(Some),
        Command::Del => ops::del(b, conf, env).map(|_| None),
        Command::Check => ops::check(b, conf, env, &inspect).map(|_| None),
        Command::Gc => ops::gc(b, conf).map(|_| None),
        Command::Status => ops::status(b, conf).map(|_| None),
        Command::Version => Ok(Some(version::info())),
    }
}

fn inspect(ifname: &str, netns: &str) -> Option<netd::kernel::netlink::InterfaceConfig> {
    let path = std::path::Path::new(netns);
    if !netd::kernel::netns::is_alive(path) {
        return None;
    }
    netd::kernel::netlink::Netlink::open_in(path)
        .and_then(|mut nl| nl.interface_config(ifname))
        .ok()
        .flatten()
}

impl From<CniError> for Outcome {
    fn from(e: CniError) -> Outcome {
        Outcome {
            stdout: Some(e.to_json(version::CURRENT)),
            code: 1,
        }
    }
}
