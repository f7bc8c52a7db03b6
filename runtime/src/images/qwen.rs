//! Images for `qwen2_5_vl`, as transformers' `Qwen2VLImageProcessor` makes
//! them: each image keeps its aspect ratio, resized (bicubic) so both sides
//! are multiples of `patch · merge` pixels and its area lies within the
//! processor's pixel range (`smart_resize`), normalised with the fused
//! `(pixel − 255·mean) / (255·std)`, and cut into patches of `3 ·
//! temporal_patch · patch²` values (the image repeated over the frames) in
//! block-major order: the `merge × merge` patches of one decoder token are
//! consecutive.

use std::path::Path;

use image::imageops::FilterType;
use image::RgbImage;

use super::load_rgb;
use crate::model::{ImagePatches, ModelError, QwenVisionConfig};

/// The size `(height, width)` an image of `height × width` pixels is
/// resized to: sides rounded to multiples of `factor`, then scaled down
/// (or up) to fit `min_pixels..=max_pixels` (transformers' `smart_resize`).
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), String> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if height == 0 || width == 0 || factor == 0 {
        return Err(format!("an image of {width}×{height} pixels has no area"));
    }
    if h.max(w) / h.min(w) > 200.0 {
        return Err(format!(
            "an image of {width}×{height} pixels is more than 200 times longer than wide"
        ));
    }
    // Python's `round` rounds halves to even.
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// `image` resized to `width × height` as Pillow's bicubic filter (and
/// torchvision's antialiased bicubic on 8-bit images, which follows it)
/// resizes: Catmull-Rom, its support widened by the scale when shrinking,
/// one pass per axis, each rounded and clipped to 8 bits. The passes run
/// in Pillow 13's order: down first where the height shrinks by more than
/// twice what the width does (`Resample.c`), across first otherwise
/// (Pillow 12 and earlier always go across first; the orders differ by up
/// to 27 grey levels where the filter overshoots). One `imageops::resize`
/// call goes down first and clips only at the end, so each pass is its own
/// call, whose other axis is the identity.
pub fn resize_bicubic(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (shrunk_down, shrunk_across) = (
        i64::from(image.height()) - i64::from(height),
        i64::from(image.width()) - i64::from(width),
    );
    if shrunk_down > 0 && shrunk_down > 2 * shrunk_across {
        let down = image::imageops::resize(image, image.width(), height, FilterType::CatmullRom);
        image::imageops::resize(&down, width, height, FilterType::CatmullRom)
    } else {
        let across = image::imageops::resize(image, width, image.height(), FilterType::CatmullRom);
        image::imageops::resize(&across, width, height, FilterType::CatmullRom)
    }
}

/// One image's patches (`[patches, patch_dim]`, row-major) and its grid
/// `[1, h, w]` in patches.
pub fn patches(
    image: &RgbImage,
    config: &QwenVisionConfig,
) -> Result<(Vec<f32>, [usize; 3]), String> {
    let p = &config.processing;
    let (patch, merge) = (config.patch_size, config.spatial_merge_size);
    let (width, height) = image.dimensions();
    let (h, w) = smart_resize(
        height as usize,
        width as usize,
        patch * merge,
        p.min_pixels,
        p.max_pixels,
    )?;
    config
        .check_image_patches((h / patch) * (w / patch))
        .map_err(|why| {
            let size = if (w, h) == (width as usize, height as usize) {
                format!("at {w}×{h} pixels")
            } else {
                format!("resized to {w}×{h} pixels")
            };
            format!("{size}, it is {why}")
        })?;
    let resized = resize_bicubic(image, w as u32, h as u32);
    let mean: [f32; 3] = p.image_mean.map(|m| m * 255.0);
    let std: [f32; 3] = p.image_std.map(|s| s * 255.0);
    let (grid_h, grid_w) = (h / patch, w / patch);
    let mut out = Vec::with_capacity(grid_h * grid_w * config.patch_dim());
    for block_y in 0..grid_h / merge {
        for block_x in 0..grid_w / merge {
            for my in 0..merge {
                for mx in 0..merge {
                    let (py, px) = (
                        (block_y * merge + my) * patch,
                        (block_x * merge + mx) * patch,
                    );
                    for c in 0..3 {
                        let start = out.len();
                        for y in 0..patch {
                            for x in 0..patch {
                                let pixel = resized.get_pixel((px + x) as u32, (py + y) as u32);
                                out.push((f32::from(pixel.0[c]) - mean[c]) / std[c]);
                            }
                        }
                        // The still image fills every frame of the patch.
                        for _ in 1..config.temporal_patch_size {
                            out.extend_from_within(start..start + patch * patch);
                        }
                    }
                }
            }
        }
    }
    Ok((out, [1, grid_h, grid_w]))
}

/// Loads and patches several images (in order), each at its own size.
pub fn load_patches(
    paths: &[impl AsRef<Path>],
    config: &QwenVisionConfig,
) -> Result<ImagePatches, ModelError> {
    let mut values = Vec::new();
    let mut grids = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.as_ref();
        let (patch_values, grid) =
            patches(&load_rgb(path)?, config).map_err(|reason| ModelError::Image {
                path: path.to_path_buf(),
                reason,
            })?;
        values.extend(patch_values);
        grids.push(grid);
    }
    Ok(ImagePatches {
        count: paths.len(),
        values,
        grids,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Pillow's bicubic resize of black-and-white noise, in both pass
    /// orders (`runtime/fixtures/images/make_resize_fixture.py`, Pillow 13):
    /// within two grey levels (Pillow's 8-bit passes are fixed-point, the
    /// `image` crate's f32; a pass that rounds 1 off feeds an enlarging one,
    /// whose Catmull-Rom weights overshoot), where the other order is 8
    /// or more off.
    #[test]
    fn resize_bicubic_matches_pillow() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/resize");
        let source = image::open(dir.join("source.png"))
            .expect("source")
            .to_rgb8();
        let worst = |a: &RgbImage, b: &RgbImage| {
            a.as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(x, y)| x.abs_diff(*y))
                .max()
                .unwrap_or(u8::MAX)
        };
        let one_pass =
            |img: &RgbImage, w, h| image::imageops::resize(img, w, h, FilterType::CatmullRom);
        for (w, h, down_first) in [
            (56, 28, true),
            (40, 10, true),
            (30, 10, false),
            (28, 56, false),
            (84, 56, false),
        ] {
            let want = image::open(dir.join(format!("{w}x{h}.png")))
                .expect("fixture")
                .to_rgb8();
            let got = resize_bicubic(&source, w, h);
            assert!(worst(&got, &want) <= 2, "{w}×{h}: {}", worst(&got, &want));
            let other_order = if down_first {
                one_pass(&one_pass(&source, w, source.height()), w, h)
            } else {
                one_pass(&one_pass(&source, source.width(), h), w, h)
            };
            if w != source.width() && h != source.height() {
                assert!(
                    worst(&other_order, &want) >= 8,
                    "{w}×{h}: the other order is {} off",
                    worst(&other_order, &want)
                );
            }
        }
    }

    #[test]
    fn smart_resize_matches_transformers() {
        // Values from transformers' `smart_resize` (factor 28).
        let cases = [
            ((45, 71, 784, 12544), (56, 84)),
            ((56, 84, 784, 12544), (56, 84)),
            ((10, 10, 3136, 12_845_056), (56, 56)),
            ((1000, 700, 3136, 200_704), (532, 364)),
            ((42, 42, 784, 12544), (56, 56)),
            ((70, 70, 784, 12544), (56, 56)),
        ];
        for ((h, w, min, max), expected) in cases {
            assert_eq!(
                smart_resize(h, w, 28, min, max).unwrap(),
                expected,
                "{h}×{w}"
            );
        }
        assert!(smart_resize(1, 300, 28, 784, 12544)
            .unwrap_err()
            .contains("200 times"));
        assert!(smart_resize(0, 3, 28, 784, 12544).is_err());
    }

    #[test]
    fn an_image_too_large_for_full_attention_is_refused_with_the_fix() {
        // 2^20 heads leave room for sqrt(2 GiB / 4 / 2^20) = 22 patches;
        // an 84×56 image is 6×4 = 24.
        let mut config: QwenVisionConfig = serde_json::from_value(serde_json::json!({
            "depth": 8, "hidden_size": 1 << 22, "intermediate_size": 8,
            "num_heads": 1 << 20, "out_hidden_size": 8
        }))
        .unwrap();
        let image = RgbImage::new(84, 56);
        // Loaded to generate or score, or with the tower frozen: any size.
        assert!(patches(&image, &config).is_ok());
        // Loaded for a stage that trains the tower.
        config.trained = true;
        let err = patches(&image, &config).unwrap_err();
        assert!(
            err.starts_with("at 84×56 pixels, it is 24 patches"),
            "{err}"
        );
        assert!(err.contains("at most 4312"), "{err}");
        assert!(err.contains("`freeze_vision = true`"), "{err}");
        let fits = RgbImage::new(56, 56);
        assert!(patches(&fits, &config).is_ok());
    }
}
