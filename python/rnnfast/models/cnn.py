"""A small convolutional network on NumPy, used as the frozen image encoder for captioning.

What it is: conv3x3 -> ReLU -> maxpool2, three times (vectorised im2col, NHWC, float32), and a linear
classification layer trained on an auxiliary multi-label task (which colour-shape pairs appear); once
trained, the classification layer is dropped and the last pooled feature map, flattened, is the image's
feature vector v. What it is not: a general deep-learning library (no strides, no other kernel sizes).
"""
from __future__ import annotations

import numpy as np


def _conv_forward(x, W, b):
    """3x3 convolution, padding 1. x (N, H, W, C); W (9*C, F) with rows ordered (di, dj, c); b (F,).
    Returns out (N, H, W, F) and the im2col matrix (N*H*W, 9*C) kept for backward."""
    N, Hh, Ww, C = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.concatenate([xp[:, i:i + Hh, j:j + Ww, :] for i in range(3) for j in range(3)], axis=-1)
    cols = cols.reshape(N * Hh * Ww, 9 * C)
    out = cols @ W
    out += b
    return out.reshape(N, Hh, Ww, -1), cols


def _conv_backward(dout, cols, W, dW, db, x_shape, need_dx):
    """Backward of _conv_forward. dW (9*C, F), db (F,) accumulate (+=); returns dx (N, H, W, C) or None."""
    N, Hh, Ww, C = x_shape
    d2 = dout.reshape(-1, dout.shape[-1])
    dW += cols.T @ d2                      # into W
    db += d2.sum(axis=0)                   # into b
    if not need_dx:
        return None
    dcols = (d2 @ W.T).reshape(N, Hh, Ww, 9, C)
    dxp = np.zeros((N, Hh + 2, Ww + 2, C), dout.dtype)
    for i in range(3):                     # col2im: each window offset scatters back
        for j in range(3):
            dxp[:, i:i + Hh, j:j + Ww, :] += dcols[:, :, :, 3 * i + j, :]
    return dxp[:, 1:-1, 1:-1, :]


def _pool_forward(x):
    """2x2 max pool. x (N, H, W, C) -> (N, H/2, W/2, C)."""
    N, Hh, Ww, C = x.shape
    xr = x.reshape(N, Hh // 2, 2, Ww // 2, 2, C)
    return xr.max(axis=(2, 4))


def _pool_backward(dout, x, out):
    N, Hh, Ww, C = x.shape
    xr = x.reshape(N, Hh // 2, 2, Ww // 2, 2, C)
    mask = xr == out[:, :, None, :, None, :]   # ties (zeros after ReLU) carry no gradient through ReLU
    return (mask * dout[:, :, None, :, None, :]).reshape(x.shape)


def _global_pool_backward(dg, fmap):
    """Route dg (N, C) to the first maximum of each channel of fmap (N, h, w, C)."""
    N, h, w, C = fmap.shape
    flat = fmap.reshape(N, h * w, C)
    arg = flat.argmax(axis=1)
    d = np.zeros_like(flat)
    np.put_along_axis(d, arg[:, None, :], dg[:, None, :], axis=1)
    return d.reshape(fmap.shape)


class SmallCNN:
    """conv(3->c1)-ReLU-pool, conv(c1->c2)-ReLU-pool, conv(c2->c3)-ReLU-pool, global max pool, linear.

    features(images) gives the flattened last pooled map: (N, (S/8)^2 * c2) for S x S inputs.
    """

    def __init__(self, image_size=32, channels=(16, 32, 32), n_labels=12, seed=0):
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
        rng = np.random.default_rng(seed)
        self.image_size = int(image_size)
        self.channels = tuple(int(c) for c in channels)
        self.n_labels = int(n_labels)
        c_in = 3
        self.params = {}
        for k, c in enumerate(self.channels):
            self.params[f"conv{k}.weight"] = (rng.standard_normal((c_in * 9, c)) * np.sqrt(2.0 / (c_in * 9))
                                              ).astype(np.float32)
            self.params[f"conv{k}.bias"] = np.zeros(c, np.float32)
            c_in = c
        self.feature_dim = (image_size // 8) ** 2 * self.channels[-1]
        c = self.channels[-1]
        self.params["fc.weight"] = (rng.standard_normal((c, n_labels)) * np.sqrt(1.0 / c)).astype(np.float32)
        self.params["fc.bias"] = np.zeros(n_labels, np.float32)
        # feature standardisation, set once after training by fit_feature_stats (no gradient flows here)
        self.params["norm.mean"] = np.zeros(self.feature_dim, np.float32)
        self.params["norm.std"] = np.ones(self.feature_dim, np.float32)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.training = True

    def config(self):
        return {"image_size": self.image_size, "channels": list(self.channels), "n_labels": self.n_labels}

    def _check(self, images):
        S = self.image_size
        if images.ndim != 4 or images.shape[1:] != (S, S, 3):
            raise ValueError(f"images must have shape (N, {S}, {S}, 3), got {tuple(images.shape)}")
        return np.ascontiguousarray(images, dtype=np.float32)

    def _trunk(self, x, keep):
        tape = []
        for k in range(len(self.channels)):
            z, cols = _conv_forward(x, self.params[f"conv{k}.weight"], self.params[f"conv{k}.bias"])
            np.maximum(z, 0, out=z)
            p = _pool_forward(z)
            if keep:
                tape.append((x.shape, cols, z, p))
            x = p
        return x.reshape(x.shape[0], -1), tape

    def _raw_features(self, images, batch_size=256):
        images = self._check(images)
        out = [self._trunk(images[i:i + batch_size], False)[0] for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)

    def features(self, images, batch_size=256):
        """The frozen encoder: the flattened last pooled feature map, standardised, (N, feature_dim) float32."""
        f = self._raw_features(images, batch_size)
        f -= self.params["norm.mean"]
        f /= self.params["norm.std"]
        return f

    def fit_feature_stats(self, images):
        """Set the standardisation from these images' features (per dimension mean and std)."""
        f = self._raw_features(images)
        self.params["norm.mean"][...] = f.mean(axis=0)
        self.params["norm.std"][...] = f.std(axis=0) + 1e-3

    def loss(self, images, labels):
        """Mean binary cross-entropy of the auxiliary labels (N, n_labels); gradients accumulate (+=)."""
        images = self._check(images)
        f, tape = self._trunk(images, True)
        fmap = tape[-1][3]                                 # (N, S/8, S/8, C)
        g = fmap.max(axis=(1, 2))                          # global max pool: "does it appear anywhere"
        Wf, bf = self.params["fc.weight"], self.params["fc.bias"]
        logits = g @ Wf + bf
        N = len(images)
        # stable BCE with logits: max(z,0) - z*y + log(1 + exp(-|z|))
        loss = float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))
        dlogits = ((1.0 / (1.0 + np.exp(-logits))) - labels) / (N * self.n_labels)
        dlogits = dlogits.astype(f.dtype)
        self.grads["fc.weight"] += g.T @ dlogits          # into the classifier
        self.grads["fc.bias"] += dlogits.sum(axis=0)
        d = _global_pool_backward(dlogits @ Wf.T, fmap)
        for k in reversed(range(len(self.channels))):
            x_shape, cols, z, p = tape[k]
            dz = _pool_backward(d, z, p)                  # back through the pool
            dz *= z > 0                                   # back through ReLU
            d = _conv_backward(dz, cols, self.params[f"conv{k}.weight"], self.grads[f"conv{k}.weight"],
                               self.grads[f"conv{k}.bias"], x_shape, k > 0)
        return loss

    def predict(self, images):
        """Auxiliary-label probabilities (N, n_labels)."""
        f = self._raw_features(images).reshape(len(images), -1, self.channels[-1]).max(axis=1)
        return 1.0 / (1.0 + np.exp(-(f @ self.params["fc.weight"] + self.params["fc.bias"])))

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state):
        for k, v in self.params.items():
            if k not in state or np.shape(state[k]) != v.shape:
                raise ValueError(f"CNN parameter {k} must have shape {v.shape}, got "
                                 f"{np.shape(state[k]) if k in state else 'nothing'}")
            v[...] = state[k]
