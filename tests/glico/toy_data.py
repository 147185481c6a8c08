"""A tiny labelled image set shared by the tests that fit GLICO."""
import torch


def toy_data(n_per_class=4, classes=3, size=8, seed=0):
    """Classes are distinct patterns: class c lights up row block c (1-channel images in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(classes):
        base = torch.zeros(1, size, size)
        base[:, c * size // classes : (c + 1) * size // classes, :] = 0.9
        for _ in range(n_per_class):
            images.append((base + 0.05 * torch.rand(1, size, size, generator=g)).clamp(0, 1))
            labels.append(c)
    return torch.stack(images), torch.tensor(labels)
