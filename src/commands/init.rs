//! `rum init`: write a commented rum.toml that passes validation.

use crate::config::template::{InitAnswers, render};
use crate::config::{self, ByteSize};
use crate::output::Reporter;
use crate::{Error, Exit};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

pub fn run(
    explicit: Option<&Path>,
    cwd: &Path,
    defaults: bool,
    reporter: &Reporter,
) -> Result<Exit, Error> {
    let file = match explicit {
        Some(path) if path.is_absolute() => path.to_path_buf(),
        Some(path) => cwd.join(path),
        None => cwd.join(config::FILE_NAME),
    };
    if file.exists() {
        return Err(Error::ConfigExists(file));
    }
    let answers = if defaults || !std::io::stdin().is_terminal() {
        InitAnswers::default()
    } else {
        let stdin = std::io::stdin();
        ask(&mut stdin.lock(), &mut std::io::stderr()).map_err(Error::Prompt)?
    };
    let text = render(&answers);
    // The template must load as it is written; checked before anything touches the disk.
    config::parse_str(&text, &file)?;

    let step = reporter.step(format!("Writing {}", file.display()));
    write_new(&file, &text)?;
    step.done();
    reporter.result(
        &format!(
            "Created {}. Next: `rum config check`, then `rum up`.",
            file.display()
        ),
        &serde_json::json!({ "file": file }),
    );
    Ok(Exit::Success)
}

/// Creates `file` only if it does not exist, removing it again if the write fails.
fn write_new(file: &Path, text: &str) -> Result<(), Error> {
    let write_error = |source| Error::Write {
        path: file.to_path_buf(),
        source,
    };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::ConfigExists(file.to_path_buf()),
            _ => write_error(e),
        })?;
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.sync_all()) {
        let _ = std::fs::remove_file(file);
        return Err(write_error(e));
    }
    Ok(())
}

/// Asks for each answer, offering the default; an empty line takes it.
pub fn ask(input: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<InitAnswers> {
    let d = InitAnswers::default();
    let base = prompt(input, out, "Base image (path, URL or name)", &d.base, |s| {
        (!s.trim().is_empty())
            .then(|| s.trim().to_owned())
            .ok_or("give an image")
    })?;
    let cpus = prompt(input, out, "CPUs", &d.cpus.to_string(), |s| {
        s.parse::<u32>()
            .ok()
            .filter(|n| (1..=255).contains(n))
            .ok_or("give a number from 1 to 255")
    })?;
    let memory_mb = prompt(input, out, "Memory in MiB", &d.memory_mb.to_string(), |s| {
        s.parse::<u64>()
            .ok()
            .filter(|n| *n >= 128)
            .ok_or("give at least 128")
    })?;
    let disk = prompt(input, out, "Root disk size", &d.disk, |s| {
        ByteSize::parse(s)
            .map(|_| s.to_owned())
            .map_err(|_| "give a size such as 20G")
    })?;
    let mount_project = prompt(
        input,
        out,
        "Share this directory at /mnt/project? (y/n)",
        "y",
        |s| match s.to_ascii_lowercase().as_str() {
            "y" | "yes" => Ok(true),
            "n" | "no" => Ok(false),
            _ => Err("answer y or n"),
        },
    )?;
    Ok(InitAnswers {
        base,
        cpus,
        memory_mb,
        disk,
        mount_project,
    })
}

fn prompt<T>(
    input: &mut impl BufRead,
    out: &mut impl Write,
    question: &str,
    default: &str,
    parse: impl Fn(&str) -> Result<T, &'static str>,
) -> std::io::Result<T> {
    loop {
        write!(out, "{question} [{default}]: ")?;
        out.flush()?;
        let mut line = String::new();
        let eof = input.read_line(&mut line)? == 0;
        let answer = line.trim();
        let answer = if answer.is_empty() { default } else { answer };
        match parse(answer) {
            Ok(value) => return Ok(value),
            Err(_) if eof => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "input ended",
                ));
            }
            Err(why) => writeln!(out, "  {why}")?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_answers_take_the_defaults() {
        let mut input = std::io::Cursor::new("\n\n\n\n\n");
        let answers = ask(&mut input, &mut Vec::new()).unwrap();
        assert_eq!(answers, InitAnswers::default());
    }

    #[test]
    fn bad_answers_are_asked_again() {
        let mut input = std::io::Cursor::new("ubuntu-24.04\n0\n4\n64\n4096\n10X\n40G\nmaybe\nn\n");
        let mut out = Vec::new();
        let answers = ask(&mut input, &mut out).unwrap();
        assert_eq!(answers.base, "ubuntu-24.04");
        assert_eq!(answers.cpus, 4);
        assert_eq!(answers.memory_mb, 4096);
        assert_eq!(answers.disk, "40G");
        assert!(!answers.mount_project);
        let shown = String::from_utf8(out).unwrap();
        assert!(shown.contains("give a number from 1 to 255"));
        assert!(shown.contains("answer y or n"));
    }
}
