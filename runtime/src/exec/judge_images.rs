//! The images an `http` judge is shown: each of a row's image files as a
//! `data:` URL, for the `image_url` parts of an OpenAI-compatible chat
//! request (vLLM, SGLang and hosted APIs read base64 `data:` URLs).
//!
//! A PNG or JPEG file goes as it is (its bytes, its MIME type), so that the
//! judge sees the whole image, not the policy's resized copy. Any other
//! file (WebP, GIF, BMP, TIFF), a PNG with transparency and one whose EXIF
//! orientation turns or mirrors it go as the image as the policy reads it
//! ([`crate::images::load_rgb`]: upright, laid over white, GIF's first
//! frame): servers differ on EXIF and on transparency (some blacken it),
//! and OpenAI's API takes no BMP or TIFF. It goes as a PNG, or, for a JPEG
//! turned by its EXIF orientation (a phone's portrait photo), as a JPEG
//! of quality 95: a PNG of a photo is ten times its size, in every
//! question. The emitted Python module (`safer_reward.judge_image`) makes
//! the same choice.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use base64::Engine;
use image::{ImageDecoder, ImageFormat};

/// How many bytes of images' URLs are kept: every question about a row
/// shows its images again (each completion of its group, each criterion),
/// and the questions of a step are about a few rows at a time.
const KEPT_BYTES: usize = 256 << 20;

/// One image's `data:` URL, made once: the questions about a row are asked
/// at once (its completions, its criteria), and the first to ask encodes it
/// while the others wait for that.
type Made = Arc<OnceLock<Result<Arc<str>, String>>>;

/// The `data:` URLs of image files, kept for the questions that follow
/// (up to [`KEPT_BYTES`]; then they are let go, all at once).
#[derive(Default)]
pub struct ImageUrls {
    kept: Mutex<HashMap<PathBuf, Made>>,
}

impl ImageUrls {
    /// The `data:` URL of the image at `path`.
    ///
    /// # Errors
    /// The file cannot be read or decoded (it was read when the dataset was
    /// loaded: it changed since), as a message naming it.
    pub fn of(&self, path: &Path) -> Result<Arc<str>, String> {
        let made = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(made) = kept.get(path) {
                made.clone()
            } else {
                let held: usize = kept
                    .values()
                    .filter_map(|m| m.get().and_then(|u| u.as_ref().ok()))
                    .map(|u| u.len())
                    .sum();
                if held > KEPT_BYTES {
                    kept.clear();
                }
                kept.entry(path.to_path_buf()).or_default().clone()
            }
        };
        made.get_or_init(|| data_url(path).map(Arc::from)).clone()
    }
}

/// The `data:` URL of the image at `path` (see the module's docs).
///
/// # Errors
/// As [`ImageUrls::of`].
pub fn data_url(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("image {}: {e}", path.display()))?;
    let (mime, bytes) = match as_it_is(&bytes) {
        Some(mime) => (mime, bytes),
        None if image::guess_format(&bytes).ok() == Some(ImageFormat::Jpeg) => {
            ("image/jpeg", encoded(path, ImageFormat::Jpeg)?)
        }
        None => ("image/png", encoded(path, ImageFormat::Png)?),
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(format!("data:{mime};base64,{encoded}"))
}

/// The MIME type `bytes` go under as they are: a PNG without transparency
/// or a JPEG, that its EXIF orientation leaves as stored; `None` for any
/// other.
fn as_it_is(bytes: &[u8]) -> Option<&'static str> {
    let format = image::guess_format(bytes).ok()?;
    let mime = match format {
        ImageFormat::Png if !transparent(bytes) => "image/png",
        ImageFormat::Jpeg => "image/jpeg",
        _ => return None,
    };
    let mut decoder = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .ok()?;
    let upright = decoder.orientation().ok()? == image::metadata::Orientation::NoTransforms;
    upright.then_some(mime)
}

/// Whether PNG bytes carry transparency: an alpha channel (colour type 4
/// or 6 in the header) or a `tRNS` chunk before the image data.
fn transparent(png: &[u8]) -> bool {
    let alpha = png.get(25).is_some_and(|t| matches!(t, 4 | 6));
    let before_data = png
        .windows(4)
        .position(|w| w == b"IDAT")
        .map_or(png, |at| &png[..at]);
    alpha || before_data.windows(4).any(|w| w == b"tRNS")
}

/// The image at `path` as the policy reads it, encoded as PNG, or as JPEG
/// of quality 95.
fn encoded(path: &Path, format: ImageFormat) -> Result<Vec<u8>, String> {
    let image = crate::images::load_rgb(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let written = match format {
        ImageFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).encode_image(&image)
        }
        _ => image.write_to(&mut Cursor::new(&mut out), format),
    };
    written.map_err(|e| {
        format!(
            "image {}: cannot encode it as {format:?}: {e}",
            path.display()
        )
    })?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn decoded(url: &str) -> (String, Vec<u8>) {
        let (head, data) = url.split_once(',').unwrap();
        let mime = head
            .strip_prefix("data:")
            .and_then(|h| h.strip_suffix(";base64"))
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        (mime.to_string(), bytes)
    }

    fn write(dir: &Path, name: &str, format: ImageFormat) -> PathBuf {
        let image =
            image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
        let path = dir.join(name);
        image.save_with_format(&path, format).unwrap();
        path
    }

    /// PNG and JPEG files go as they are; BMP (and WebP, GIF, TIFF) and a
    /// transparent PNG as a PNG of what the policy sees.
    #[test]
    fn files_go_as_they_are_or_as_png() {
        let dir = std::env::temp_dir().join(format!("saferc-judge-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, format, mime) in [
            ("a.png", ImageFormat::Png, "image/png"),
            ("a.jpg", ImageFormat::Jpeg, "image/jpeg"),
        ] {
            let path = write(&dir, name, format);
            let (shown, bytes) = decoded(&data_url(&path).unwrap());
            assert_eq!(shown, mime);
            assert_eq!(bytes, std::fs::read(&path).unwrap(), "{name}");
        }
        let bmp = write(&dir, "a.bmp", ImageFormat::Bmp);
        let clear = dir.join("clear.png");
        image::RgbaImage::from_fn(3, 2, |x, _| image::Rgba([200, 10, 10, x as u8 * 100]))
            .save(&clear)
            .unwrap();
        for path in [&bmp, &clear] {
            let (mime, bytes) = decoded(&data_url(path).unwrap());
            assert_eq!(mime, "image/png");
            let shown = image::load_from_memory_with_format(&bytes, ImageFormat::Png).unwrap();
            assert!(!shown.color().has_alpha());
            assert_eq!(shown.to_rgb8(), crate::images::load_rgb(path).unwrap());
        }
        // Kept: the same URL again, and a missing file named.
        let urls = ImageUrls::default();
        let first = urls.of(&bmp).unwrap();
        assert!(Arc::ptr_eq(&first, &urls.of(&bmp).unwrap()));
        let missing = urls.of(&dir.join("gone.png")).unwrap_err();
        assert!(missing.contains("gone.png"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A JPEG that its EXIF orientation turns goes as a JPEG of the upright
    /// image (a server might not turn it; a PNG of a photo is ten times
    /// its size).
    #[test]
    fn a_turned_jpeg_goes_upright() {
        let dir = std::env::temp_dir().join(format!("saferc-judge-exif-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = write(&dir, "plain.jpg", ImageFormat::Jpeg);
        let path = dir.join("turned.jpg");
        std::fs::write(
            &path,
            crate::images::tests::turned_by_exif(&std::fs::read(&plain).unwrap()),
        )
        .unwrap();
        let (mime, bytes) = decoded(&data_url(&path).unwrap());
        assert_eq!(mime, "image/jpeg");
        let shown = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let upright = crate::images::load_rgb(&path).unwrap();
        assert_eq!(shown.dimensions(), (4, 6));
        // Quality 95: within a few levels of what the policy sees.
        let most = shown
            .as_raw()
            .iter()
            .zip(upright.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(most <= 16, "{most}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
