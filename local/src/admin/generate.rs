//! Man pages and shell completions from a binary's own clap definition (`khttpd --generate
//! KIND`, `khttpctl generate KIND`), as ripgrep's `--generate` does: the package build runs
//! the installed binaries, so the pages can never describe other flags than the binary has.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What can be generated.
pub const KINDS: [&str; 4] = ["man", "bash", "zsh", "fish"];

/// Writes `kind` for `cmd` to `out`: a man page in section 8 (system administration), or a
/// completion script.
///
/// # Errors
/// Writing failed, or `kind` is not one of [`KINDS`].
pub fn generate(cmd: clap::Command, kind: &str, out: &mut dyn Write) -> io::Result<()> {
    use clap_complete::{Shell, generate as complete};
    let name = cmd.get_name().to_string();
    let mut cmd = cmd;
    match kind {
        "man" => clap_mangen::Man::new(cmd)
            .section("8")
            .manual("khttp")
            .render(out),
        "bash" => {
            complete(Shell::Bash, &mut cmd, name, out);
            Ok(())
        }
        "zsh" => {
            complete(Shell::Zsh, &mut cmd, name, out);
            Ok(())
        }
        "fish" => {
            complete(Shell::Fish, &mut cmd, name, out);
            Ok(())
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot generate {other:?}: use man, bash, zsh or fish"),
        )),
    }
}

/// Writes the man pages of `cmd` and of every subcommand it shows (`khttpctl-cache-load.8`…),
/// section 8, into `dir`; returns their paths. The top page names the others, so each must
/// exist.
///
/// # Errors
/// A page could not be written.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, dir, out)?;
        }
        out.push(
            clap_mangen::Man::new(cmd)
                .section("8")
                .manual("khttp")
                .generate_to(dir)?,
        );
        Ok(())
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, dir, &mut out)?;
    Ok(out)
}
