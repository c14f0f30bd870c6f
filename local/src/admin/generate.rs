//! Man pages and shell completions from a binary's own clap definition (`khttpd --generate
//! KIND`, `khttpctl generate KIND`), as ripgrep's `--generate` does: the package build runs
//! the installed binaries, so the pages can never describe other flags than the binary has.

use std::io::{self, Write};

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
