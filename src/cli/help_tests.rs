//! `--help` completeness: every subcommand and every option of the command tree explains
//! itself, so an SRE reading `lifeboat X --help` under pressure never meets a bare flag.

use clap::CommandFactory;

use super::Cli;

/// `(path, what)` for each subcommand or argument without help text.
fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" || arg.is_hide_set() {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            out.push(format!("{path} --{id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        let name = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            out.push(name.clone());
        }
        undocumented(sub, &name, out);
    }
}

#[test]
fn the_command_tree_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_subcommand_and_option_has_help() {
    let mut missing = Vec::new();
    undocumented(&Cli::command(), "lifeboat", &mut missing);
    assert!(
        missing.is_empty(),
        "without help text (add a /// line):\n  {}",
        missing.join("\n  ")
    );
}
