//! Images for the vision tower: decoding (the `image` crate), resizing to
//! the model's square input, normalisation, and cutting into patches
//! (`tiny_vlm`; `qwen2_5_vl`'s processor is [`qwen`]).
//!
//! Layout of one image's patches: `[patches, 3 * patch * patch]`, patches in
//! row-major order over the grid, and inside a patch channel-major
//! (`c, y, x`), after `(pixel / 255 - mean[c]) / std[c]`.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageDecoder, Luma, LumaA, Rgb, RgbImage, Rgba};

use crate::model::{ImagePatches, ModelError, VisionConfig};

pub mod qwen;

/// The most pixels an image may have: twice Pillow's
/// `Image.MAX_IMAGE_PIXELS`, above which Pillow refuses an image as a
/// decompression bomb (`DecompressionBombError`; between one and two times
/// it only warns). About 13,400 × 13,400.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// Why an image of `width` × `height` pixels is refused (over
/// [`MAX_PIXELS`]), or `None`: its size is read from the header, before a
/// decompression bomb is decoded.
pub fn over_the_pixel_limit(width: u32, height: u32) -> Option<String> {
    (u64::from(width) * u64::from(height) > MAX_PIXELS).then(|| {
        format!(
            "is {width}×{height} pixels, over the limit of {MAX_PIXELS} (where Pillow refuses an image as a decompression bomb)"
        )
    })
}

/// Decodes the image at `path` (PNG, JPEG, WebP, GIF's first frame, BMP or
/// TIFF) to RGB, upright by its EXIF orientation, refusing one over
/// [`MAX_PIXELS`]; a transparent one is
/// laid over white first, as transformers' processors (`do_convert_rgb`)
/// and Pillow's `alpha_composite` do. A 16-bit PNG becomes 8 bits as
/// Pillow reads it ([`to_eight_bits_as_pillow`]).
pub fn load_rgb(path: &Path) -> Result<RgbImage, ModelError> {
    if let Some(kind) = not_a_file(path) {
        return Err(ModelError::Image {
            path: path.to_path_buf(),
            reason: format!("{kind}, not an image file"),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| ModelError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let cannot_decode = |e: image::ImageError| ModelError::Image {
        path: path.to_path_buf(),
        reason: format!("cannot decode: {e}"),
    };
    // The size from the header first: a small file can hold an image too
    // large to decode (a "decompression bomb"), which Pillow refuses too.
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|e| cannot_decode(e.into()))
    };
    let (width, height) = reader()?.into_dimensions().map_err(cannot_decode)?;
    if let Some(over) = over_the_pixel_limit(width, height) {
        return Err(ModelError::Image {
            path: path.to_path_buf(),
            reason: format!(
                "{over}; a model sees it resized to a few hundred pixels a side, so shrink the file"
            ),
        });
    }
    // A camera's EXIF orientation is applied, as transformers' image
    // loading (`load_image`, `fetch_images`) and `datasets` apply it.
    let mut decoder = reader()?.into_decoder().map_err(cannot_decode)?;
    let orientation = decoder.orientation().map_err(cannot_decode)?;
    let mut decoded = DynamicImage::from_decoder(decoder).map_err(cannot_decode)?;
    decoded.apply_orientation(orientation);
    if let Some(reason) = cut_short(&bytes) {
        return Err(ModelError::Image {
            path: path.to_path_buf(),
            reason,
        });
    }
    let decoded = to_eight_bits_as_pillow(decoded, stored_as_grey(&bytes));
    if !decoded.color().has_alpha() {
        return Ok(decoded.to_rgb8());
    }
    Ok(over_white(&decoded.to_rgba8()))
}

/// Why a JPEG that decodes is still cut short, or `None`: the `image`
/// crate fills the rows of a file cut inside its compressed data with grey
/// and returns no error, where Pillow refuses it ("image file is
/// truncated"). The file's segments are walked from its start-of-image
/// marker: each segment by its length, each scan's compressed data to the
/// next marker (inside it an `FF` is only ever followed by `00` or a
/// restart marker); reaching the end of the bytes before the end-of-image
/// marker (`FF D9`) means the file was cut. What follows that marker
/// (a camera's trailer, a motion photo's video) is not looked at; bytes
/// that are not a marker where one should be are left to the decoder,
/// which read them.
pub fn cut_short(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let cut = || {
        Some(format!(
            "is a JPEG cut short: its data ends at byte {} before the end-of-image marker (an interrupted download or copy?)",
            bytes.len()
        ))
    };
    let mut at = 2;
    loop {
        match bytes.get(at) {
            None => return cut(),
            Some(0xFF) => {}
            Some(_) => return None,
        }
        // Fill bytes: any number of `FF` before the marker's code.
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else {
            return cut();
        };
        at += 1;
        match marker {
            0xD9 => return None,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(length) = bytes.get(at..at + 2) else {
            return cut();
        };
        let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
        if length < 2 {
            return None;
        }
        at += length;
        if at > bytes.len() {
            return cut();
        }
        if marker == 0xDA {
            // The scan's compressed data, to the next marker.
            loop {
                let Some(offset) = bytes
                    .get(at..)
                    .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
                else {
                    return cut();
                };
                let ff = at + offset;
                match bytes.get(ff + 1) {
                    None => return cut(),
                    Some(0x00 | 0xD0..=0xD7) => at = ff + 2,
                    Some(_) => {
                        at = ff;
                        break;
                    }
                }
            }
        }
    }
}

/// Whether `bytes` are a PNG stored as grey without an alpha channel. Such
/// a file with a `tRNS` colour decodes to grey-with-alpha, but Pillow reads
/// its values as it reads any grey PNG's.
fn stored_as_grey(bytes: &[u8]) -> bool {
    png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .is_ok_and(|reader| reader.info().color_type == png::ColorType::Grayscale)
}

/// What `path` is when it exists but is not a regular file (a folder, a
/// pipe, a device), which reading would refuse or wait on forever; `None`
/// for a file, or for a path that cannot be looked at (reading it then
/// says why).
pub fn not_a_file(path: &Path) -> Option<&'static str> {
    let meta = std::fs::metadata(path).ok()?;
    match () {
        _ if meta.is_file() => None,
        _ if meta.is_dir() => Some("a folder"),
        _ => Some("a pipe, socket or device"),
    }
}

/// A 16-bit image in 8 bits as Pillow, and so transformers' processors,
/// read it: colour and grey-with-alpha PNGs keep each value's high byte
/// (Pillow's `RGB;16B`-style raw modes; the `image` crate would round
/// `v / 257`, one level apart), and a grey one is clipped at 255 (Pillow
/// opens it as `I;16`, whose conversion to RGB clips rather than scales:
/// most of such an image turns white). `stored_as_grey` says a
/// grey-with-alpha image was a grey file with a transparent value (`tRNS`),
/// whose grey is clipped too: Pillow's `convert_transparent` clears the
/// pixels equal to that value, and every other one keeps its clipped grey.
/// Other images are returned as they are.
pub fn to_eight_bits_as_pillow(image: DynamicImage, stored_as_grey: bool) -> DynamicImage {
    let high = |v: u16| (v >> 8) as u8;
    let clipped = |v: u16| v.min(255) as u8;
    match image {
        DynamicImage::ImageLuma16(grey) => {
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(grey.width(), grey.height(), |x, y| {
                Luma([clipped(grey.get_pixel(x, y).0[0])])
            }))
        }
        DynamicImage::ImageLumaA16(grey) => {
            DynamicImage::ImageLumaA8(ImageBuffer::from_fn(grey.width(), grey.height(), |x, y| {
                let [value, alpha] = grey.get_pixel(x, y).0;
                let value = if stored_as_grey {
                    clipped(value)
                } else {
                    high(value)
                };
                LumaA([value, high(alpha)])
            }))
        }
        DynamicImage::ImageRgb16(rgb) => {
            DynamicImage::ImageRgb8(ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
                Rgb(rgb.get_pixel(x, y).0.map(high))
            }))
        }
        DynamicImage::ImageRgba16(rgba) => {
            DynamicImage::ImageRgba8(ImageBuffer::from_fn(rgba.width(), rgba.height(), |x, y| {
                Rgba(rgba.get_pixel(x, y).0.map(high))
            }))
        }
        other => other,
    }
}

/// `image` laid over an opaque white background: each channel becomes
/// `round((c·α + 255·(255 − α)) / 255)`, which is Pillow's result for every
/// value and alpha.
pub fn over_white(image: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b, alpha] = image.get_pixel(x, y).0;
        let a = u32::from(alpha);
        let blend = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

/// Resizes (bilinear), normalises and patches one image: `[patches, patch_dim]` row-major.
pub fn patches(image: &RgbImage, config: &VisionConfig) -> Vec<f32> {
    let size = config.image_size as u32;
    let resized = if image.dimensions() == (size, size) {
        image.clone()
    } else {
        image::imageops::resize(image, size, size, FilterType::Triangle)
    };
    let p = config.patch_size;
    let side = config.image_size / p;
    let mut out = Vec::with_capacity(config.num_patches() * config.patch_dim());
    for py in 0..side {
        for px in 0..side {
            for c in 0..3 {
                for y in 0..p {
                    for x in 0..p {
                        let pixel = resized.get_pixel((px * p + x) as u32, (py * p + y) as u32);
                        let value = f32::from(pixel.0[c]) / 255.0;
                        out.push((value - config.image_mean[c]) / config.image_std[c]);
                    }
                }
            }
        }
    }
    out
}

/// Loads and patches several images (in order).
pub fn load_patches(
    paths: &[impl AsRef<Path>],
    config: &VisionConfig,
) -> Result<ImagePatches, ModelError> {
    let mut values = Vec::with_capacity(paths.len() * config.num_patches() * config.patch_dim());
    for path in paths {
        values.extend(patches(&load_rgb(path.as_ref())?, config));
    }
    Ok(ImagePatches {
        count: paths.len(),
        values,
        grids: Vec::new(),
    })
}

/// A 1×1 grey PNG whose header says `width` × `height` (its checksum made
/// to match): what reads the size from the header sees a huge image, and
/// nothing is there to decode. For tests of the pixel limit.
#[cfg(test)]
pub(crate) fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut png);
    // A 1×1 image always encodes.
    let _ = image::ImageEncoder::write_image(encoder, &[0u8], 1, 1, image::ExtendedColorType::L8);
    // Signature (8), IHDR length (4), "IHDR" (4), width, height.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    // PNG's CRC-32 (ISO-HDLC) of the chunk's type and data, bit by bit.
    let mut crc = !0u32;
    for &b in &png[12..29] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    png[29..33].copy_from_slice(&(!crc).to_be_bytes());
    png
}

#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A JPEG cut anywhere inside its compressed data decodes in the
    /// `image` crate (grey rows fill the rest) but is refused here, as
    /// Pillow refuses it; the whole file, and bytes after its end marker,
    /// pass.
    #[test]
    fn a_jpeg_cut_short_is_refused() {
        let noise = image::RgbImage::from_fn(64, 64, |x, y| {
            let v = (x * 7919 + y * 104_729) as u8;
            image::Rgb([v, v.wrapping_mul(3), v.wrapping_add(91)])
        });
        let mut whole = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut whole, 90)
            .encode_image(&noise)
            .expect("encode");
        assert_eq!(cut_short(&whole), None);
        // Data after the end marker (a camera's trailer, a motion photo's
        // video) is not looked at, start-of-scan bytes in it included.
        for trailer in [&b"camera data"[..], &[0xFF, 0xDA, 0x00, 0x08, 1, 2, 3][..]] {
            let mut trailing = whole.clone();
            trailing.extend_from_slice(trailer);
            assert_eq!(cut_short(&trailing), None, "{trailer:?}");
        }
        // Restart markers inside the compressed data, and an application
        // segment holding a thumbnail's markers, are walked over.
        let scan_end = whole.len() - 2;
        let mut restarted = whole[..scan_end].to_vec();
        restarted.extend_from_slice(&[0xFF, 0xD0, 0x12, 0xFF, 0x00, 0xFF, 0xD9]);
        assert_eq!(cut_short(&restarted), None);
        let mut thumbnail = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xDA, 0xFF, 0xD9];
        thumbnail.extend_from_slice(&whole[2..]);
        assert_eq!(cut_short(&thumbnail), None);
        assert!(cut_short(&thumbnail[..thumbnail.len() - 40]).is_some());
        let scan = whole
            .windows(2)
            .rposition(|w| w == [0xFF, 0xDA])
            .expect("a scan");
        for len in [scan + 20, (scan + whole.len()) / 2, whole.len() - 1] {
            let cut = &whole[..len];
            assert!(
                image::load_from_memory(cut).is_ok(),
                "the image crate decodes it"
            );
            let reason = cut_short(cut).expect("refused");
            assert!(reason.contains("cut short"), "{reason}");
        }
        assert_eq!(cut_short(b"\x89PNG\r\n"), None);
    }

    /// The JPEG `plain` with an EXIF block that says "rotate 90° clockwise
    /// to view" (orientation 6, as phones write portrait photos).
    pub(crate) fn turned_by_exif(plain: &[u8]) -> Vec<u8> {
        // APP1: "Exif", a big-endian TIFF header, one IFD entry
        // (0x0112 orientation, SHORT, 1 value: 6), no next IFD.
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        let length = u16::try_from(exif.len() + 2).expect("short");
        let mut rotated = vec![0xFF, 0xD8, 0xFF, 0xE1];
        rotated.extend_from_slice(&length.to_be_bytes());
        rotated.extend_from_slice(&exif);
        rotated.extend_from_slice(&plain[2..]);
        rotated
    }

    /// A JPEG whose EXIF says "rotate 90° clockwise to view" (orientation
    /// 6, as phones write portrait photos) loads upright, as transformers
    /// loads it (`load_image` applies Pillow's `exif_transpose`).
    #[test]
    fn exif_orientation_is_applied() {
        let image = RgbImage::from_fn(48, 32, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
        });
        let mut plain = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 95)
            .encode_image(&image)
            .expect("encode");
        let rotated = turned_by_exif(&plain);
        let dir = std::env::temp_dir().join(format!("saferc-exif-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (plain_path, rotated_path) = (dir.join("plain.jpg"), dir.join("rotated.jpg"));
        std::fs::write(&plain_path, &plain).expect("write");
        std::fs::write(&rotated_path, &rotated).expect("write");
        let stored = load_rgb(&plain_path).expect("plain");
        let upright = load_rgb(&rotated_path).expect("rotated");
        assert_eq!(stored.dimensions(), (48, 32));
        assert_eq!(upright.dimensions(), (32, 48));
        assert_eq!(upright, image::imageops::rotate90(&stored));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// WebP, GIF (its first frame), BMP and TIFF decode as transformers'
    /// Pillow decodes them: exactly, for these lossless encodings.
    #[test]
    fn other_formats_decode() {
        use image::ImageFormat;
        let image = RgbImage::from_fn(20, 12, |x, y| {
            image::Rgb([
                (x * 12) as u8,
                (y * 20) as u8,
                if (x + y) % 2 == 0 { 0 } else { 255 },
            ])
        });
        let dir = std::env::temp_dir().join(format!("saferc-formats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, format) in [
            ("a.webp", ImageFormat::WebP),
            ("a.bmp", ImageFormat::Bmp),
            ("a.tiff", ImageFormat::Tiff),
        ] {
            let path = dir.join(name);
            image.save_with_format(&path, format).expect("save");
            assert_eq!(load_rgb(&path).expect(name), image, "{name}");
        }
        // GIF holds a palette: two colours survive it exactly.
        let two = RgbImage::from_fn(8, 6, |x, _| {
            if x < 4 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let path = dir.join("a.gif");
        two.save_with_format(&path, ImageFormat::Gif).expect("save");
        assert_eq!(load_rgb(&path).expect("gif"), two);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn transparency_is_laid_over_white_as_pillow_lays_it() {
        // Pillow's `alpha_composite` over white, then `convert("RGB")`.
        let cases = [
            ([10u8, 200, 77, 255], [10u8, 200, 77]),
            ([10, 200, 77, 0], [255, 255, 255]),
            ([0, 0, 0, 128], [127, 127, 127]),
            ([100, 50, 0, 1], [254, 254, 254]),
            ([100, 50, 0, 200], [133, 94, 55]),
        ];
        for (rgba, rgb) in cases {
            let image = image::RgbaImage::from_pixel(1, 1, image::Rgba(rgba));
            assert_eq!(over_white(&image).get_pixel(0, 0).0, rgb, "{rgba:?}");
        }
    }

    /// 16-bit PNGs decode to the 8-bit RGB that transformers 5.25's
    /// `convert_to_rgb` (Pillow 13) gives for the same files (for the
    /// `tRNS` case, a file of the same values written by hand in Python).
    #[test]
    fn sixteen_bit_pngs_read_as_pillow_reads_them() {
        let dir = std::env::temp_dir().join(format!("saferc-16bit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let first_two = |image: DynamicImage| -> Vec<[u8; 3]> {
            let path = dir.join("image.png");
            image.save(&path).expect("png");
            let rgb = load_rgb(&path).expect("decodes");
            vec![rgb.get_pixel(0, 0).0, rgb.get_pixel(1, 0).0]
        };
        // Grey: 17 stays, 4017 clips to white.
        let grey = ImageBuffer::from_fn(4, 4, |x, y| Luma([((y * 4 + x) * 4000 + 17) as u16]));
        assert_eq!(
            first_two(DynamicImage::ImageLuma16(grey)),
            [[17; 3], [255; 3]]
        );
        // Colour: each value's high byte (1492 → 5, where v / 257 rounds to 6).
        let value = |x: u32, y: u32, c: u32| (((y * 4 + x) * 3 + c) * 1365 + 127) as u16;
        let rgb = ImageBuffer::from_fn(4, 4, |x, y| Rgb([0, 1, 2].map(|c| value(x, y, c))));
        assert_eq!(
            first_two(DynamicImage::ImageRgb16(rgb)),
            [[0, 5, 11], [16, 21, 27]]
        );
        // With alpha: high bytes, then laid over white.
        let rgba = ImageBuffer::from_fn(4, 4, |x, y| {
            Rgba([value(x, y, 0), value(x, y, 1), value(x, y, 2), 30_000])
        });
        assert_eq!(
            first_two(DynamicImage::ImageRgba16(rgba)),
            [[138, 140, 143], [145, 148, 150]]
        );
        let grey_alpha = ImageBuffer::from_pixel(2, 2, LumaA([300u16, 40_000]));
        assert_eq!(
            first_two(DynamicImage::ImageLumaA16(grey_alpha)),
            [[100; 3], [100; 3]]
        );
        // Grey with a transparent value (`tRNS` 100): clipped, and the
        // pixels equal to 100 laid over white.
        let values: [u16; 8] = [17, 4017, 100, 300, 255, 65535, 0, 356];
        let path = dir.join("grey-trns.png");
        let file = std::fs::File::create(&path).expect("file");
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 8, 1);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Sixteen);
        encoder.set_trns(100u16.to_be_bytes().to_vec());
        let mut writer = encoder.write_header().expect("header");
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        writer.write_image_data(&data).expect("data");
        writer.finish().expect("png");
        let rgb = load_rgb(&path).expect("decodes");
        let greys: Vec<u8> = (0..8).map(|x| rgb.get_pixel(x, 0).0[0]).collect();
        assert_eq!(greys, [17, 255, 255, 255, 255, 255, 0, 255]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn config() -> VisionConfig {
        VisionConfig {
            image_size: 4,
            patch_size: 2,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            rms_norm_eps: 1e-6,
            image_mean: [0.5, 0.5, 0.5],
            image_std: [0.5, 0.5, 0.5],
        }
    }

    #[test]
    fn patch_layout_is_grid_row_major_then_channel_major() {
        // Red channel = x + 4y (in 0..16, scaled by 17 to fill 0..255); green 0, blue 255.
        let image = RgbImage::from_fn(4, 4, |x, y| image::Rgb([((x + 4 * y) * 17) as u8, 0, 255]));
        let values = patches(&image, &config());
        assert_eq!(values.len(), 4 * 12);
        let norm = |v: u32| ((v * 17) as f32 / 255.0 - 0.5) / 0.5;
        // Patch 1 (top right) red channel covers x 2..4, y 0..2: pixels 2, 3, 6, 7.
        assert_eq!(&values[12..16], &[norm(2), norm(3), norm(6), norm(7)]);
        assert_eq!(values[12 + 4], -1.0); // green 0
        assert_eq!(values[12 + 8], 1.0); // blue 255
    }

    #[test]
    fn an_image_over_the_pixel_limit_is_refused_before_it_is_decoded() {
        let dir = std::env::temp_dir().join(format!("saferc-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bomb.png");
        std::fs::write(&path, png_claiming(20_000, 20_000)).expect("write");
        let err = load_rgb(&path).expect_err("refused").to_string();
        assert!(err.contains("20000×20000 pixels, over the limit"), "{err}");
        assert!(err.contains("bomb.png"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn undecodable_image_names_its_path() {
        let path = std::env::temp_dir().join(format!("saferc-bad-{}.png", std::process::id()));
        std::fs::write(&path, b"not a png").expect("write");
        let err = load_rgb(&path).expect_err("undecodable");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("cannot decode"), "{err}");
        std::fs::remove_file(&path).ok();
        let missing = load_rgb(Path::new("/nonexistent/x.png")).expect_err("missing");
        assert!(missing.to_string().contains("/nonexistent/x.png"));
    }
}
