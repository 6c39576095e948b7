"""Lambda grids for deblurring / inpainting / super-resolution of the gray model
(docs/calibration_tasks_fine.log); writes runs/cal_tasks2.json for scripts/set_model_meta.py.

    python scripts/calibrate_tasks.py
"""
import os
import torch, json, sys, alr
ROOT = os.environ["ALR_DATA"]
from alr.images import read_image, list_images
from alr.data import add_noise
from alr.metrics import psnr
from alr.physics import Blur, gaussian_kernel, Inpainting, random_mask, Downsampling
torch.set_num_threads(1)
m = alr.load('gray')
files = list_images(f"{ROOT}/set12")[:4]
x = torch.cat([read_image(f)[..., 64:160, 64:160] for f in files])
res = {}
for task, s, phys, lams in [("deblur", 0.01, Blur(gaussian_kernel(1.6)), [0.0001, 0.0003, 0.001]),
                            ("deblur", 0.03, Blur(gaussian_kernel(1.6)), [0.0003, 0.001, 0.003]),
                            ("inpaint", 0.01, Inpainting(random_mask((96, 96), 0.5, 1)), [0.0001, 0.0003, 0.001]),
                            ("sr", 0.01, Downsampling(2), [0.0001, 0.0003, 0.001])]:
    y = add_noise(phys.A(x), s, seed=1)
    best = None
    for lam in lams:
        xh, _ = alr.restore(y, phys, m, lam, method='lbfgs', iters=20)
        p = psnr(xh, x).mean().item()
        print(task, s, lam, round(p, 2), flush=True)
        if best is None or p > best[1]: best = (lam, p)
    t = res.setdefault(task, {"sigma": [], "lam": []})
    t["sigma"].append(s); t["lam"].append(best[0])
json.dump({"gray": res}, open('runs/cal_tasks2.json', 'w'))
print(res)
