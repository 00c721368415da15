#!/usr/bin/env python3
"""Tests of train_world.py's LoRA training (torch + diffusers; CI does not run them). Run: python3 scripts/train_world_test.py"""
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_world as T  # noqa: E402


class LoraTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        torch.manual_seed(0)
        cls.base = {k: v.clone() for k, v in T.build_unet().state_dict().items()}

    def unet(self, rank, conv_rank):
        unet = T.build_unet()
        unet.load_state_dict(self.base)
        return unet, T.add_lora(unet, rank, conv_rank)

    def test_layers_and_ranks(self):
        """Every linear layer and convolution, as `mumu lora extract --layers full` extracts them (314 modules on
        sdxl-tiny, the count of its rank-8 extraction): 3x3 convolutions at conv_rank, the rest at rank; only the
        factors train."""
        unet, deltas = self.unet(8, 1)
        modules = dict(unet.named_modules())
        self.assertEqual(len(deltas), 314)
        for name, d in deltas.items():
            m = modules[name]
            conv3 = isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
            self.assertEqual(d.up.shape[1], 1 if conv3 else min(8, d.up.shape[0], d.down.shape[1]), name)
        trainable = {id(p) for p in unet.parameters() if p.requires_grad}
        self.assertEqual(trainable, {id(p) for d in deltas.values() for p in (d.down, d.up)})
        self.assertEqual(len(self.unet(8, 0)[1]), 274)  # conv rank 0: the 3x3 convolutions stay the base's

    def test_starts_as_the_base_and_merges_exactly(self):
        """up starts at zero, so the state is the base's; after the factors change, lora_state's merged weights are
        base + up @ down (3x3 convolutions: up (out, r) times down (r, in * kh * kw), LoCon's product), what export
        extracts again, and its factors are the trained ones."""
        unet, deltas = self.unet(4, 2)
        merged, _ = T.lora_state(unet, deltas)
        self.assertEqual(set(merged), set(self.base))
        self.assertTrue(all(torch.equal(merged[k], self.base[k]) for k in self.base))
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for d in deltas.values():
                d.up.copy_(0.01 * torch.randn(d.up.shape, generator=g))
        merged, factors = T.lora_state(unet, deltas)
        for name, d in deltas.items():
            w = self.base[name + ".weight"]
            want = w + (d.up @ d.down).view(w.shape)
            self.assertLess((merged[name + ".weight"] - want).abs().max().item(), 1e-6, name)
            self.assertTrue(torch.equal(factors[name]["up"], d.up) and torch.equal(factors[name]["down"], d.down))
        untouched = set(self.base) - {n + ".weight" for n in deltas}
        self.assertTrue(all(torch.equal(merged[k], self.base[k]) for k in untouched))


class TimestepBiasTest(unittest.TestCase):
    def test_earlier_and_later(self):
        """diffusers' generate_timestep_weights: the first (earlier) or last (later) portion of the 1,000 timesteps
        `multiplier` times as likely as the rest; uniform sampling (None) when not biased."""
        self.assertIsNone(T.timestep_weights("none", 4, 0.25))
        self.assertIsNone(T.timestep_weights("earlier", 1, 0.25))
        w = T.timestep_weights("earlier", 4, 0.25)
        self.assertAlmostEqual(w.sum().item(), 1, places=5)
        self.assertAlmostEqual(w[0].item() / w[999].item(), 4, places=5)
        self.assertAlmostEqual(w[:250].sum().item(), 4 * 250 / (4 * 250 + 750), places=5)
        self.assertEqual(w[249].item(), w[0].item())
        self.assertEqual(w[250].item(), w[999].item())
        w = T.timestep_weights("later", 2, 0.5)
        self.assertAlmostEqual(w[999].item() / w[0].item(), 2, places=5)
        self.assertEqual(w[500].item(), w[999].item())
        for multiplier, portion in [(0, 0.25), (-1, 0.25), (2, 0), (2, 1.5)]:
            with self.assertRaises(ValueError):
                T.timestep_weights("earlier", multiplier, portion)

    def test_draws_follow_the_weights(self):
        g = torch.Generator().manual_seed(0)
        mean = torch.zeros(4, 4, 2, 2)
        _, _, t = T.noised_batch(mean, mean, torch.zeros(20000, dtype=torch.long), T.scheduler(), 0, g,
                                 T.timestep_weights("earlier", 4, 0.25))
        self.assertAlmostEqual((t < 250).float().mean().item(), 4 / 7, delta=0.02)


if __name__ == "__main__":
    unittest.main()
