"""The bundled model samples what it sampled when it was bundled: a guard for refactors (loading, sampling
and the spectral maths must leave its output unchanged). Re-record when the bundled model itself changes:
``python tests/test_bundled.py`` prints the new values."""

import numpy as np
import skimage.data

# Summary of the bundled model's normalised volume (seed 3, 10 DDIM steps, the stored guidance) for a
# 64 x 40 motion of a crop of scikit-image's astronaut: without the mask gate, mean |x| per channel and 8 fixed
# entries; then with the stored gate (which nearly stills this rigid photo), mean |x| per channel.
RECORDED = [0.0850676, 0.116463, 0.0766521, 0.0868317, 0.0878487, 0.4524661, 0.0058497, -0.3417692, -0.0003175,
            0.0067402, -0.7013418, -0.0118809, 0.0049538, 0.0067212, 0.0044183, 0.0051835]


def summary() -> list[float]:
  import jax  # pylint: disable=g-import-not-at-top
  from gid_jax import animate  # pylint: disable=g-import-not-at-top
  from gid_jax.diffusion import motion_sampler  # pylint: disable=g-import-not-at-top
  sampler = motion_sampler.MotionSampler(animate.DEFAULT_CHECKPOINT)
  s = sampler.image_scale  # the image is s times the motion's 64 x 40
  image = skimage.data.astronaut()[::8 // s, ::8 // s][:40 * s, :64 * s].astype(np.float32) / 127.5 - 1.0
  v = np.asarray(sampler.sample_normalized(image[None], jax.random.PRNGKey(3), num_steps=10, mask_gate=0.0))[0]
  flat = v.reshape(-1)
  picks = flat[np.linspace(0, flat.size - 1, 8).astype(int)]
  gated = np.asarray(sampler.sample_normalized(image[None], jax.random.PRNGKey(3), num_steps=10))[0]
  assert sampler.default_mask_gate() > 0
  return ([float(x) for x in np.abs(v).mean(axis=(0, 1, 2))] + [float(x) for x in picks]
          + [float(x) for x in np.abs(gated).mean(axis=(0, 1, 2))])


def test_bundled_model_samples_the_recorded_volume():
  np.testing.assert_allclose(summary(), RECORDED, rtol=1e-4, atol=1e-5)


if __name__ == '__main__':
  print('RECORDED =', [round(x, 7) for x in summary()])
