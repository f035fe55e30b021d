//! The `enipin` command line: parses the arguments, lays them over the config file into the
//! [`Settings`] of the command, and runs it.

mod complete;
mod man;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use clap_complete::engine::ArgValueCompleter;
use enipin::{
    settings::config::{self, DelegatedPrefix, Listen, MetadataSource, Mode, Paths},
    settings::config_file::ConfigPath,
    settings::{Entry, Given, Loader, Settings, Source},
};

/// Pins every reply to the network interface (ENI) that owns its source address.
#[derive(Parser, Debug)]
#[command(name = "enipin", version = enipin::VERSION, about, long_about = None)]
struct Cli {
    /// Run inside the named network namespace (/run/netns/NAME) instead of the current one.
    #[arg(
        long,
        global = true,
        help_heading = "Global",
        env = "ENIPIN_NETNS",
        add = ArgValueCompleter::new(complete::netns)
    )]
    netns: Option<String>,
    /// bpffs directory for enipin's pinned links, program and maps.
    #[arg(long, global = true, help_heading = "Global", env = "ENIPIN_PIN_DIR", default_value = config::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Directory of enipin's state file.
    #[arg(long, global = true, help_heading = "Global", env = "ENIPIN_STATE_DIR", default_value = config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The config file of attach, watch, render and `config check`; flags override it. Default:
    /// /etc/enipin/enipin.toml if it exists (missing: built-in defaults); a file named here must
    /// exist.
    #[arg(
        long,
        global = true,
        help_heading = "Global",
        env = "ENIPIN_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,
    /// Log lines on stderr: text, json (one object a line), or journal (`<N>` syslog priority
    /// prefixes, no timestamps); auto is journal when stderr is systemd's journal stream, else
    /// text. RUST_LOG filters them (default: info).
    #[arg(
        long,
        global = true,
        help_heading = "Global",
        env = "ENIPIN_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: enipin::observe::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Every flag that stands for a config file key is an `Option` (or a flag that is set or not):
/// one not given leaves the key to the file, then to the default.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Selection")]
struct Selection {
    /// Interfaces to manage, by name or MAC (comma-separated), each with the ENIs its replies
    /// could leave by. Default: every ENI a reply from which could leave by another ENI (main
    /// table). [file: select.interfaces]
    #[arg(long, value_delimiter = ',', add = ArgValueCompleter::new(complete::interfaces))]
    interfaces: Option<Vec<String>>,
    /// Gateway of the managed interfaces on its subnet, of every one if on none (default: the
    /// main table's default route through the interface, else another interface's whose gateway
    /// is on its subnet, else the subnet's first host). [file: select.gateway]
    #[arg(long)]
    gateway: Option<IpAddr>,
    /// First policy routing table number (default 20000). [file: select.table-base]
    #[arg(long)]
    table_base: Option<u32>,
    /// First rule priority (default 20000). [file: select.priority]
    #[arg(long)]
    priority: Option<u32>,
    /// A prefix delegated to an interface, IFACE=CIDR (repeatable). [file: select.prefixes]
    #[arg(long = "prefix", value_name = "IFACE=CIDR")]
    prefixes: Option<Vec<DelegatedPrefix>>,
}

impl Selection {
    fn give(self, g: &mut Given) {
        g.interfaces = self.interfaces;
        g.gateway = self.gateway;
        g.table_base = self.table_base;
        g.priority = self.priority;
        g.prefixes = self.prefixes;
    }
}

/// Which layers `attach` and `watch` install, and how the datapath behaves.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Layers")]
struct Layers {
    /// Leave policy rules, routes and sysctls alone (eBPF only). [file: layers.rules = false]
    #[arg(long)]
    no_rules: bool,
    /// Leave the datapath alone (rules only). [file: layers.ebpf = false]
    #[arg(long)]
    no_ebpf: bool,
    /// enforce (the default): redirect misrouted packets; monitor: only count them. [file:
    /// datapath.mode]
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Log rare datapath events (redirect failures, MTU) through aya-log; `watch` prints them on
    /// stderr. [file: datapath.debug]
    #[arg(long)]
    debug: bool,
    #[command(flatten)]
    connmark: Connmark,
}

/// `--connmark` and its mask (`attach`, `watch`, and `doctor`, which checks them).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Layers")]
struct Connmark {
    /// Route the replies of connections that arrived on a managed interface out of it up front:
    /// nftables marks each connection with its interface and the mark's `fwmark` rule picks
    /// that interface's table, so replies of DNAT'd services (docker -p, NodePorts) need no
    /// redirect. Needs the nft command. [file: layers.connmark]
    #[arg(long)]
    connmark: bool,
    /// The bits of the packet and conntrack marks connmark uses, contiguous (default
    /// 0xff000000): an interface's mark is its ifindex shifted into them. [file:
    /// layers.connmark-mask]
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    connmark_mask: Option<u32>,
}

impl Connmark {
    fn give(self, g: &mut Given) {
        g.connmark = self.connmark.then_some(true);
        g.connmark_mask = self.connmark_mask;
    }
}

/// `0xff000000` or a decimal number.
fn parse_mask(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a 32-bit number (hex with 0x, or decimal): {e}"))
}

/// Addresses and prefixes from the cloud's metadata (`attach` and `watch`).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Metadata")]
struct Metadata {
    /// Also manage the secondary addresses and delegated prefixes the cloud's metadata assigns
    /// each ENI (aws: IMDSv2). Default none: netlink alone. [file: metadata.source]
    #[arg(long, value_enum)]
    metadata: Option<MetadataSource>,
    /// The metadata service's base URL (default: aws's http://169.254.169.254, then
    /// http://[fd00:ec2::254]). [file: metadata.endpoint]
    #[arg(long, value_name = "URL")]
    metadata_endpoint: Option<String>,
    /// Add the addresses metadata assigns that an interface lacks (marked as enipin's), and
    /// remove them when metadata stops listing them and on detach. Needs a metadata source.
    /// [file: metadata.configure-addresses]
    #[arg(long)]
    configure_addresses: bool,
}

impl Metadata {
    fn give(self, g: &mut Given) {
        g.metadata = self.metadata;
        g.metadata_endpoint = self.metadata_endpoint;
        g.configure_addresses = self.configure_addresses.then_some(true);
    }
}

impl Layers {
    fn give(self, g: &mut Given) {
        g.rules = self.no_rules.then_some(false);
        g.ebpf = self.no_ebpf.then_some(false);
        g.mode = self.mode;
        g.debug = self.debug.then_some(true);
        self.connmark.give(g);
    }
}

/// `watch`'s own settings.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Watch")]
struct WatchFlags {
    /// Seconds between reconciles when no event arrives (a safety net for missed events; default
    /// 30). [file: watch.interval]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    interval: Option<u64>,
    /// Serve GET /metrics (datapath and control plane) and GET /healthz on this address;
    /// `none` serves nothing (default 127.0.0.1:9717). A non-loopback address is allowed, with a
    /// warning. [file: metrics.listen]
    #[arg(long)]
    metrics_listen: Option<Listen>,
    /// With a metadata source: seconds between metadata lookups, since the service sends no
    /// event (default 10). [file: metadata.interval]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    metadata_interval: Option<u64>,
}

impl WatchFlags {
    fn give(self, g: &mut Given) {
        g.interval = self.interval;
        g.listen = self.metrics_listen;
        g.metadata_interval = self.metadata_interval;
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install source policy routing and the TC egress enforcer on the managed interfaces.
    Attach {
        #[command(flatten)]
        sel: Selection,
        #[command(flatten)]
        layers: Layers,
        #[command(flatten)]
        metadata: Metadata,
        /// Print what would change, change nothing.
        #[arg(long, help_heading = "Output")]
        dry_run: bool,
        /// Output of --dry-run: enipin's diff, or the equivalent iproute2 commands (a script
        /// `bash -n` accepts; what has no iproute2 form is a comment).
        #[arg(long, value_enum, requires = "dry_run", help_heading = "Output", default_value_t = enipin::routing::plan::DiffFormat::Text)]
        format: enipin::routing::plan::DiffFormat,
    },
    /// Attach, then keep the desired state installed: re-apply it whenever links, addresses,
    /// rules or routes change (rules removed by another tool, a new ENI or secondary address, a
    /// detached ENI), and every --interval. One log line per reconcile that changed something.
    ///
    /// A failed reconcile changes nothing and is retried with backoff: an error is never taken
    /// for "nothing to manage". When discovery succeeds and no interface needs pinning any more
    /// (the last ENI sharing the subnet is gone), enipin's rules, routes and datapath are removed.
    /// SIGTERM/SIGINT stop watching and exit 0 LEAVING the state installed, like attach, so a
    /// restart of the service causes no gap; `enipin detach` removes it. Holds the state
    /// directory's lock while it runs: attach and detach refuse to run beside it.
    Watch {
        #[command(flatten)]
        sel: Selection,
        #[command(flatten)]
        layers: Layers,
        #[command(flatten)]
        watch: WatchFlags,
        #[command(flatten)]
        metadata: Metadata,
    },
    /// Remove exactly what enipin added and restore the sysctls it changed.
    Detach,
    /// Managed interfaces, addresses, tables, rules, attachment, and drift from the desired state.
    ///
    /// Drift is anything `enipin attach` would change: a missing rule, route or sysctl, and a
    /// missing datapath link, program, map or owner entry. Exit status: 0 when attached without
    /// drift (or not attached at all: no state file, nothing desired), 1 when attached with drift
    /// or when the state could not be read, so a health check can run it.
    Status {
        /// The same report as one JSON object (for scripts).
        #[arg(long, help_heading = "Output")]
        json: bool,
        /// Every rule, route, address and change: without it, lists longer than 12 are folded
        /// into counts per table and interface.
        #[arg(long, short, conflicts_with = "json", help_heading = "Output")]
        verbose: bool,
    },
    /// Datapath counters per interface, summed over CPUs: the ones an operator reads, under 100
    /// columns, with what each counts.
    Stats {
        /// One JSON object per interface, a key per counter (for scripts).
        #[arg(long, help_heading = "Output")]
        json: bool,
        /// A column per counter (about 190 columns).
        #[arg(long, conflicts_with = "json", help_heading = "Output")]
        wide: bool,
    },
    /// Counters in Prometheus text format: once to stdout, or served over HTTP with --listen.
    Metrics {
        /// Serve GET /metrics on this address (e.g. 127.0.0.1:9717).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Find what on this host will fight enipin, before it does: systemd-networkd deleting
    /// foreign rules, cloud agents managing the same interfaces, others' rules at enipin's
    /// priorities or tables, strict rp_filter now or from sysctl.d at the next boot, other TC
    /// programs on the interfaces, missing kernel features, interfaces sharing a MAC.
    ///
    /// Only reads; changes nothing. One line per finding (ok / warning / conflict) with what it
    /// means and the fix. Exit status 1 when there is a conflict.
    Doctor {
        #[command(flatten)]
        sel: Selection,
        #[command(flatten)]
        connmark: Connmark,
        /// The findings as JSON (for scripts).
        #[arg(long, help_heading = "Output")]
        json: bool,
        /// Read configuration files (networkd.conf, netplan, sysctl.d, unit files) and /proc's
        /// processes under DIR instead of / (a copy of a host's /etc, or a test's scratch root).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Write one .tar.gz for a bug report: version and program tag, status, doctor, stats and
    /// config check as JSON, the namespace's rules, routes, addresses and TC, the pins, and the
    /// unit's journal where systemd runs. Only reads; nothing secret (no metadata token).
    Sysdump {
        /// Where to write it (default: enipin-sysdump-<unix time>.tar.gz here).
        #[arg(long, short, value_name = "FILE", help_heading = "Output")]
        output: Option<PathBuf>,
    },
    /// Print the desired state as persistent distro network configuration.
    Render {
        #[command(flatten)]
        sel: Selection,
        /// network-scripts (ifcfg rule-/route- files), networkd (drop-ins beside enipin),
        /// netplan (YAML), or nmcli (a bash script).
        #[arg(long, value_enum, help_heading = "Output")]
        format: enipin::commands::render::Format,
        /// Write each file at its path under DIR (etc/..., the nmcli script at the top) instead
        /// of printing them all; a second run writes the same bytes.
        #[arg(long, value_name = "DIR", help_heading = "Output")]
        output_dir: Option<PathBuf>,
        /// Read networkd's .network files under DIR instead of / (networkd's drop-ins extend the
        /// file networkd applies to each interface).
        #[arg(long, value_name = "DIR", help_heading = "Output")]
        root: Option<PathBuf>,
    },
    /// The config file: `enipin config check`.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run the seed scenario in throwaway namespaces: two ENIs in one subnet behind a "VPC" that
    /// drops packets whose source IP or MAC is not the ENI's, before and after enipin.
    Lab {
        /// Leave the namespaces in place and print how to enter them.
        #[arg(long)]
        keep: bool,
        /// The metadata scenario: the secondary ENI's second address exists only in a metadata
        /// server (IMDSv2, in the lab); `attach --metadata aws --configure-addresses` adds it.
        #[arg(long)]
        metadata: bool,
        /// Where the secondary ENI is: in the primary's subnet (the seed), or in a subnet of its
        /// own with a default route of its own (DHCP's on AL2023), the vpc routing between them.
        #[arg(long, value_enum, default_value = "shared")]
        subnets: enipin::lab::Subnets,
    },
    /// The shell's completion script on stdout, as `COMPLETE=SHELL enipin` prints it (the
    /// packages install them).
    #[command(hide = true)]
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
    /// Man pages, written into DIR: section 8 (enipin is in sbin), enipin.8 and one per command,
    /// and enipin.toml.5.
    #[command(hide = true)]
    Man {
        /// Where to write the pages.
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Validate the config file and print the effective settings, one line per key with where
    /// it came from (default, file:LINE, env, flag). Exit 1 with the error on a bad file. Takes
    /// the flags of attach and watch, to show what they override.
    Check {
        #[command(flatten)]
        sel: Selection,
        #[command(flatten)]
        layers: Layers,
        #[command(flatten)]
        metadata: Metadata,
        #[command(flatten)]
        watch: WatchFlags,
        /// Every setting with its source as JSON (for scripts).
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
}

/// The command line: [`Cli`] with each command's examples in its `--help`.
fn command() -> clap::Command {
    man::with_examples(Cli::command())
}

fn main() -> ExitCode {
    // `COMPLETE=bash enipin ...` (the shell's completion script calling) answers and exits.
    clap_complete::CompleteEnv::with_factory(command)
        .var(complete::VAR)
        .completer("enipin")
        .complete();
    one_malloc_arena();
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    enipin::observe::logging::init(cli.log_format);
    // `enipin status | head` should end quietly, as other Unix tools do, not panic on EPIPE. Not
    // the lab: killed by SIGPIPE it could not remove its namespaces; a failed print unwinds
    // through their guards instead.
    if !matches!(cli.command, Command::Lab { .. }) {
        // SAFETY: resetting a signal disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // Enter the namespace before the runtime starts its threads: they inherit it.
    if let Some(ns) = &cli.netns
        && let Err(e) = enipin::kernel::netns::enter(ns)
    {
        eprintln!("enipin: {e:#}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("enipin: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli, &matches)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("enipin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates an arena of its own (64 MiB reserved, what it
/// touches resident) and keeps its freed memory there. enipin's allocations are small and come
/// in bursts (a reconcile, a scrape) on the runtime's 2 workers, so one arena for all threads:
/// watch's peak anonymous memory at 15 x 50 addresses went from 3.0 to 2.4 MiB (bench `--only
/// watch`), and allocation is nowhere near a hot path. musl has one allocator state already.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: a malloc tunable, set before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

async fn run(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    let globals = globals(&cli, matches);
    let paths = Paths {
        pin_dir: cli.pin_dir,
        state_dir: cli.state_dir,
    };
    let loader = |given| Loader {
        path: ConfigPath::new(cli.config.clone()),
        given,
    };
    let mut given = Given::default();
    match cli.command {
        Command::Attach {
            sel,
            layers,
            metadata,
            dry_run,
            format,
        } => {
            give_common(&mut given, sel, layers, metadata);
            let s = loader(given).load()?;
            enipin::commands::attach(&s.config, &paths, dry_run, format).await?;
        }
        Command::Watch {
            sel,
            layers,
            metadata,
            watch,
        } => {
            give_common(&mut given, sel, layers, metadata);
            watch.give(&mut given);
            let loader = loader(given);
            let s = loader.load()?;
            let pacing = pacing(&s);
            enipin::daemon::watch(s, &loader, &paths, pacing).await?;
        }
        Command::Detach => enipin::commands::detach(&paths).await?,
        Command::Status { json, verbose } => {
            if !enipin::commands::status(&paths, json, verbose).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Stats { json, wide } => {
            enipin::observe::metrics::stats(&paths, json, wide).await?
        }
        Command::Metrics { listen } => enipin::observe::metrics::metrics(&paths, listen).await?,
        Command::Doctor {
            sel,
            connmark,
            json,
            root,
        } => {
            sel.give(&mut given);
            connmark.give(&mut given);
            let s = loader(given).load()?;
            let root = enipin::doctor::Root::new(root);
            if !enipin::doctor::doctor(&s.config, &paths, &root, json).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Sysdump { output } => sysdump(&paths, cli.config.as_deref(), output).await?,
        Command::Render {
            sel,
            format,
            output_dir,
            root,
        } => {
            sel.give(&mut given);
            let s = loader(given).load()?;
            let out = enipin::commands::render::Output::new(output_dir, root);
            enipin::commands::render::render(&s.config, format, &out).await?;
        }
        Command::Config {
            action:
                ConfigAction::Check {
                    sel,
                    layers,
                    metadata,
                    watch,
                    json,
                },
        } => {
            give_common(&mut given, sel, layers, metadata);
            watch.give(&mut given);
            let mut s = loader(given).load()?;
            s.entries.extend(globals);
            config_check(&s, json)?;
        }
        Command::Lab {
            keep,
            metadata,
            subnets,
        } => return enipin::lab::run(keep, metadata, subnets).await,
        Command::Completions { shell } => complete::registration(shell)?,
        Command::Man { dir } => man::write(command(), &dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The flags of the selection, the layers and the metadata, which attach, watch and config check
/// share.
fn give_common(g: &mut Given, sel: Selection, layers: Layers, metadata: Metadata) {
    sel.give(g);
    layers.give(g);
    metadata.give(g);
}

/// `sysdump`: the bundle, its reports run with the same directories and config file.
async fn sysdump(paths: &Paths, config: Option<&Path>, output: Option<PathBuf>) -> Result<()> {
    let globals = sysdump_globals(paths, config);
    let out = enipin::commands::sysdump::sysdump(paths, &globals, output).await?;
    println!("{}", out.display());
    Ok(())
}

/// The global flags sysdump gives each report it runs: the same directories and config file.
fn sysdump_globals(paths: &Paths, config: Option<&Path>) -> Vec<std::ffi::OsString> {
    let mut globals: Vec<std::ffi::OsString> = vec![
        "--pin-dir".into(),
        paths.pin_dir.clone().into(),
        "--state-dir".into(),
        paths.state_dir.clone().into(),
    ];
    if let Some(c) = config {
        globals.extend(["--config".into(), c.into()]);
    }
    globals
}

/// The watcher's pacing from the settings.
fn pacing(s: &Settings) -> enipin::daemon::Pacing {
    let mut pacing = enipin::daemon::Pacing::new(std::time::Duration::from_secs(s.interval));
    pacing.metadata = std::time::Duration::from_secs(s.metadata_interval);
    pacing
}

/// `config check`: the settings, then the global flags that are not in the file.
fn config_check(s: &Settings, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&s.json())?);
    } else {
        print!("{s}");
    }
    Ok(())
}

/// `--pin-dir`, `--state-dir`, `--netns` for `config check`: flags or environment only.
fn globals(cli: &Cli, m: &ArgMatches) -> Vec<Entry> {
    let source = |id: &str, var: &'static str| match m.value_source(id) {
        Some(clap::parser::ValueSource::CommandLine) => Source::Flag,
        Some(clap::parser::ValueSource::EnvVariable) => Source::Env(var),
        _ => Source::Default,
    };
    let path = |p: &PathBuf| serde_json::Value::from(p.display().to_string());
    vec![
        Entry {
            key: "pin-dir",
            value: path(&cli.pin_dir),
            source: source("pin_dir", "ENIPIN_PIN_DIR"),
        },
        Entry {
            key: "state-dir",
            value: path(&cli.state_dir),
            source: source("state_dir", "ENIPIN_STATE_DIR"),
        },
        Entry {
            key: "netns",
            value: cli.netns.clone().into(),
            source: source("netns", "ENIPIN_NETNS"),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of every command says what it does, and a command of many flags groups them
    /// under headings (issue 28, item 4: `attach -h` listed 24 without one, `--json` and
    /// `render --format` said nothing).
    #[test]
    fn every_flag_is_described_and_long_lists_are_grouped() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let args: Vec<_> = (c.get_arguments())
                .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
                .collect();
            let own = args.iter().filter(|a| !a.is_global_set()).count();
            for a in &args {
                let id = a.get_id().as_str();
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path}: {id} has no description"));
                }
                if own > 6 && !a.is_positional() && a.get_help_heading().is_none() {
                    missing.push(format!("{path}: {id} stands under no heading"));
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "enipin", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }

    /// Every flag the key table (enipin.toml(5), docs/config.md) names is one `config check`
    /// takes, and says which key it sets.
    #[test]
    fn the_key_tables_flags_exist_and_name_their_key() {
        let mut cmd = Cli::command();
        cmd.build();
        let check = cmd
            .find_subcommand("config")
            .unwrap()
            .find_subcommand("check")
            .unwrap();
        for k in enipin::settings::keys::KEYS {
            let Some(flag) = k.flag else { continue };
            let long = flag.trim_start_matches("--");
            let arg = (check.get_arguments())
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("{}: no {flag}", k.name));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.contains(&format!("[file: {}", k.name)),
                "{flag}: {help}"
            );
        }
    }

    /// Every command with examples shows them at the end of its --help.
    #[test]
    fn help_ends_with_examples() {
        let mut cmd = command();
        let help = cmd.render_long_help().to_string();
        assert!(help.contains("Examples:\n  enipin doctor\n"), "{help}");
        let attach = cmd.find_subcommand_mut("attach").unwrap();
        let help = attach.render_long_help().to_string();
        assert!(
            help.trim_end().ends_with("also the addresses EC2 assigns"),
            "{help}"
        );
    }
}
