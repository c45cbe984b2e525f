//! Man pages and shell completions of `dnsledger` and `dnsql`, rendered from the very
//! `clap::Command` each binary parses its arguments with, so the clap definitions stay their
//! only source. Each binary has a hidden subcommand, [`SUBCOMMAND`], that calls [`generate`]; the
//! Debian package build (`scripts/build-deb.sh`) runs it on the binaries it packages.
//!
//! Output layout under the directory given (the package's paths follow it):
//! ```text
//! man/<bin>.1, man/<bin>-<subcommand>.1   one page per visible (sub)command
//! bash/<bin>                              /usr/share/bash-completion/completions/
//! zsh/_<bin>                              /usr/share/zsh/vendor-completions/
//! fish/<bin>.fish                         /usr/share/fish/vendor_completions.d/
//! ```

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, ArgMatches, Command};
use clap_complete::Shell;

/// The hidden subcommand each binary answers with its documentation.
pub const SUBCOMMAND: &str = "generate-docs";

/// A failure to write one of the files, naming it.
#[derive(Debug)]
pub struct Error {
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write `{}`: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// For a binary's `main`: parses the process arguments with `cmd` plus the hidden
/// [`SUBCOMMAND`]. When that subcommand was given, writes the docs of `cmd` (file names on
/// stdout, an error with a hint on stderr) and returns the exit code (0 or 1) as `Err`;
/// otherwise returns the matches for the binary's own `FromArgMatches`. Usage errors exit 2
/// here, as `Parser::parse` would.
pub fn parse(cmd: Command) -> Result<ArgMatches, ExitCode> {
    let matches = with_subcommand(cmd.clone()).get_matches();
    let Some(dir) = requested(&matches) else {
        return Ok(matches);
    };
    match generate(cmd, &dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: DIR must be a directory this user can create and write");
            Err(ExitCode::FAILURE)
        }
    }
}

/// `cmd` with the hidden [`SUBCOMMAND`] added (`<bin> generate-docs DIR`). Hidden: it appears
/// in no help text, man page or completion.
pub fn with_subcommand(cmd: Command) -> Command {
    cmd.subcommand(
        Command::new(SUBCOMMAND)
            .about("Write the man pages and shell completions into DIR (for packaging)")
            .hide(true)
            .arg(
                Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    )
}

/// The output directory when `matches` are those of [`SUBCOMMAND`].
pub fn requested(matches: &ArgMatches) -> Option<PathBuf> {
    match matches.subcommand() {
        Some((name, sub)) if name == SUBCOMMAND => sub.get_one::<PathBuf>("dir").cloned(),
        _ => None,
    }
}

/// Writes the man pages and the bash, zsh and fish completions of `cmd` (without
/// [`SUBCOMMAND`]) under `dir`, and returns the files written.
pub fn generate(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let name = cmd.get_name().to_owned();
    let mut written = Vec::new();

    let man_dir = dir.join("man");
    create_dir(&man_dir)?;
    // The top-level page and one per visible subcommand (`man dnsledger-record`), as
    // clap_mangen::generate_to would, but with each file named in errors.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = vec![cmd.clone()];
    let mut i = 0;
    while i < pages.len() {
        let subs: Vec<Command> = pages[i]
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned()
            .collect();
        pages.extend(subs);
        i += 1;
    }
    for page in pages {
        let man = clap_mangen::Man::new(page).manual("dnsledger");
        let path = man_dir.join(man.get_filename());
        write_file(&path, |w| man.render(w))?;
        written.push(path);
    }

    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let shell_dir = dir.join(sub);
        create_dir(&shell_dir)?;
        let path = shell_dir.join(file);
        let mut cmd = cmd.clone();
        write_file(&path, |w| {
            clap_complete::generate(shell, &mut cmd, &name, w);
            Ok(())
        })?;
        written.push(path);
    }
    Ok(written)
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error {
        path: dir.to_owned(),
        source,
    })
}

fn write_file(
    path: &Path,
    render: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), Error> {
    let wrap = |source| Error {
        path: path.to_owned(),
        source,
    };
    let mut w = BufWriter::new(File::create(path).map_err(wrap)?);
    render(&mut w).map_err(wrap)?;
    w.flush().map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Subcommand;

    #[derive(Debug, clap::Parser)]
    #[command(name = "demo", version)]
    /// A demo tool.
    struct Demo {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        /// Run it.
        Run {
            /// How long.
            #[arg(long)]
            age: Option<String>,
        },
        #[command(hide = true)]
        Secret,
    }

    fn demo() -> Command {
        <Demo as clap::CommandFactory>::command()
    }

    #[test]
    fn writes_pages_and_completions_without_hidden_commands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = generate(demo(), dir.path()).expect("generate");
        let names: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .expect("under dir")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "man/demo.1",
                "man/demo-run.1",
                "bash/demo",
                "zsh/_demo",
                "fish/demo.fish"
            ]
        );
        let page = fs::read_to_string(dir.path().join("man/demo-run.1")).expect("page");
        assert!(page.contains("How long"), "{page}");
        let bash = fs::read_to_string(dir.path().join("bash/demo")).expect("bash");
        assert!(bash.contains("--age"), "{bash}");
        // Hidden subcommands get no page (clap_complete would complete them, which is why
        // the binaries pass their command without SUBCOMMAND).
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "1"))
        {
            let text = fs::read_to_string(f).expect("read");
            assert!(!text.contains("secret"), "{}", f.display());
        }
    }

    #[test]
    fn the_subcommand_is_hidden_and_parsed() {
        let cmd = with_subcommand(demo());
        let sub = cmd.find_subcommand(SUBCOMMAND).expect("added");
        assert!(sub.is_hide_set());
        let m = cmd
            .try_get_matches_from(["demo", SUBCOMMAND, "/tmp/x"])
            .expect("parse");
        assert_eq!(requested(&m), Some(PathBuf::from("/tmp/x")));
        let m = with_subcommand(demo())
            .try_get_matches_from(["demo", "run"])
            .expect("parse");
        assert_eq!(requested(&m), None);
    }

    #[test]
    fn a_failure_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("man");
        fs::write(&blocker, "not a directory").expect("write");
        let e = generate(demo(), dir.path()).expect_err("man is a file");
        assert_eq!(e.path, blocker);
        assert!(e.to_string().starts_with("cannot write `"), "{e}");
    }
}
