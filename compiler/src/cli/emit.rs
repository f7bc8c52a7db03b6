//! `saferc emit`: compile a pipeline and write one GRPO stage as files for
//! another trainer ([`crate::emit`]).

use super::ImportArgs;
use crate::emit::{emit, Target};
use std::path::{Path, PathBuf};

/// What to emit and where.
pub(super) struct Request<'a> {
    pub target: Target,
    pub stage: Option<&'a str>,
    pub out: Option<&'a Path>,
    pub force: bool,
}

pub(super) fn run(file: &Path, request: Request<'_>, imports: &ImportArgs) -> i32 {
    let Some(plan) = super::compile_plan(file, imports) else {
        return 1;
    };
    let emitted = match emit(
        &plan,
        request.target,
        request.stage,
        &file.display().to_string(),
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return 1;
        }
    };
    let out = request.out.map_or_else(
        || default_folder(file, request.target, &emitted),
        Path::to_path_buf,
    );
    if out.exists() && !out.is_dir() {
        eprintln!(
            "error: --out {} is a file; emit writes into a folder",
            out.display()
        );
        return 1;
    }
    // A folder to be made below a file would fail only when it is made.
    if let Some(file) = out
        .ancestors()
        .skip(1)
        .find(|a| a.exists())
        .filter(|a| !a.is_dir())
    {
        eprintln!(
            "error: --out {} is below {}, which is a file, not a folder",
            out.display(),
            file.display()
        );
        return 1;
    }
    // Checked before anything is written, so that none is. A link (also
    // one to nowhere) would be written through, outside the folder.
    for path in emitted.files.iter().map(|(name, _)| out.join(name)) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            eprintln!(
                "error: {} is a symbolic link, where emit writes a file of its own; nothing was written",
                path.display()
            );
            return 1;
        }
        if !meta.is_file() {
            eprintln!(
                "error: {} is a folder (or not a plain file), where emit writes a file; nothing was written",
                path.display()
            );
            return 1;
        }
    }
    // Files the user may have edited are not replaced unless asked.
    let changed: Vec<String> = emitted
        .files
        .iter()
        .filter(
            |(name, text)| match std::fs::read_to_string(out.join(name)) {
                Ok(old) => old != *text,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            },
        )
        .map(|(name, _)| name.clone())
        .collect();
    if !changed.is_empty() && !request.force {
        eprintln!(
            "error: {} already holds {} that differ from what emit writes; nothing was written (--force replaces them)",
            out.display(),
            changed.join(", ")
        );
        return 1;
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return 1;
    }
    // Every file is written beside its place first and then renamed into
    // it: a write that fails (a full disk) leaves the folder as it was. A
    // file replaced keeps its permissions (a `reward_spec.json` made
    // private stays private), and one holding a credential is made
    // readable by its owner alone.
    let staged: Vec<(PathBuf, PathBuf)> = emitted
        .files
        .iter()
        .map(|(name, _)| {
            (
                out.join(format!(".{name}.emit-{}", std::process::id())),
                out.join(name),
            )
        })
        .collect();
    let discard = |staged: &[(PathBuf, PathBuf)]| {
        for (temp, _) in staged {
            let _ = std::fs::remove_file(temp);
        }
    };
    for ((name, text), (temp, path)) in emitted.files.iter().zip(&staged) {
        let private = emitted.private.contains(name);
        let written = std::fs::write(temp, text).and_then(|()| match std::fs::metadata(path) {
            Ok(old) if !private => std::fs::set_permissions(temp, old.permissions()),
            _ if private => owner_only(temp),
            _ => Ok(()),
        });
        if let Err(e) = written {
            eprintln!(
                "error: cannot write {}: {e}; nothing was written",
                path.display()
            );
            discard(&staged);
            return 1;
        }
    }
    for (temp, path) in &staged {
        if let Err(e) = std::fs::rename(temp, path) {
            eprintln!(
                "error: cannot write {}: {e} (the files listed above were written)",
                path.display()
            );
            discard(&staged);
            return 1;
        }
        println!("wrote {}", path.display());
    }
    for note in &emitted.notes {
        eprintln!("note: {note}");
    }
    0
}

/// `emit-TARGET-STAGE` beside the pipeline.
fn default_folder(file: &Path, target: Target, emitted: &crate::emit::Emitted) -> PathBuf {
    let target = match target {
        Target::Trl => "trl",
        Target::Verl => "verl",
    };
    let stage = emitted.stage.as_str();
    file.parent()
        .unwrap_or(Path::new("."))
        .join(format!("emit-{target}-{stage}"))
}

/// Makes `path` readable and writable by its owner alone (mode 0600).
#[cfg(unix)]
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn owner_only(_path: &Path) -> std::io::Result<()> {
    Ok(())
}
