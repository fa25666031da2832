#!/usr/bin/env python3
"""PyTorch exploration of the spire-tiny backbone (about 7x faster than our trainer on this CPU).

Trains the spire-tiny UNet config (diffusers UNet2DConditionModel) from scratch on the training
photos, empty caption, and every 1000 steps prints the held-out x0 PSNR at t = 999/200/10 (four
64x64 crops of the held-out photos, fixed noise). A backbone whose x0 PSNR at t = 10 is below the
noisy input's (26 dB) cannot pass detail through, whatever the adaptor learns.
Used for the measurements in docs/builtin-model.md; not part of the recipe.

    python scripts/explore/tiny_backbone.py OUT PRED STEPS [BLOCK_OUT_CHANNELS] [LR]
    # e.g. OUT=/tmp/bb PRED=sample STEPS=3001 '[48,64,80]' 5e-4

MODEL (env, default target/spire-tiny-v1) is a spire-tiny folder whose unet/scheduler/text_encoder
configs are used. Needs torch, diffusers, transformers, opencv-python, pillow.
"""
import torch, glob, random, numpy as np, sys, time, cv2
import torch.nn.functional as F
from PIL import Image
from diffusers import UNet2DConditionModel, DDPMScheduler
from transformers import CLIPTextModel, CLIPTokenizer
torch.set_num_threads(1)
torch.manual_seed(0); random.seed(0)
import os
ROOT=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
M=os.environ.get('MODEL', ROOT+'/target/spire-tiny-v1'); out=sys.argv[1]; pred=sys.argv[2]; steps=int(sys.argv[3])
cfg=UNet2DConditionModel.load_config(M+'/unet')
import json
if len(sys.argv)>4: cfg['block_out_channels']=json.loads(sys.argv[4])
# Optional variants (environment): FACTOR = pixel-shuffle factor (default 4), NGROUPS = GroupNorm groups,
# TMAX = train only on timesteps below it (default 1000), LOWFRAC/LOWT = that fraction of samples
# drawn below LOWT instead (default LOWT 100).
FACTOR=int(os.environ.get('FACTOR','4'))
cfg['in_channels']=cfg['out_channels']=3*FACTOR*FACTOR
if 'NGROUPS' in os.environ: cfg['norm_num_groups']=int(os.environ['NGROUPS'])
print('variant: factor', FACTOR, 'groups', cfg['norm_num_groups'], 'channels', cfg['block_out_channels'])
LR=float(sys.argv[5]) if len(sys.argv)>5 else 5e-4
u=UNet2DConditionModel.from_config(cfg)
print('params',sum(p.numel() for p in u.parameters()))
s=DDPMScheduler.from_pretrained(M+'/scheduler'); s.register_to_config(prediction_type=pred)
te=CLIPTextModel.from_pretrained(M+'/text_encoder').eval()
tok=CLIPTokenizer.from_pretrained(ROOT+'/recipes/spire-tiny/tokenizer')
ids=lambda t: tok(t,padding='max_length',max_length=77,truncation=True,return_tensors='pt').input_ids
with torch.no_grad(): ctx0=te(ids([''])).last_hidden_state
files=[f for f in sorted(glob.glob(ROOT+'/../shared/data/photos/*.png'))+sorted(glob.glob(ROOT+'/../shared/data/photos/*.jpg')) if not any(h in f for h in ['astronaut','chelsea','coffee','motorcycle_left'])]
imgs=[np.asarray(Image.open(f).convert('RGB'),dtype=np.float32)/255 for f in files]
def crop():
    sc=random.uniform(1.0,2.5); r=int(round(64*sc)); im=random.choice(imgs); h,w,_=im.shape
    y=random.randint(0,h-r); x=random.randint(0,w-r); c=np.ascontiguousarray(im[y:y+r,x:x+r])
    return cv2.resize(c,(64,64),interpolation=cv2.INTER_AREA)*2-1
ims=[np.asarray(Image.open(f).convert('RGB'),dtype=np.float32)/255 for f in sorted(glob.glob(ROOT+'/../shared/data/photos/*')) if any(h in f for h in ['astronaut','chelsea','coffee','motorcycle_left'])]
XV=F.pixel_unshuffle(torch.stack([torch.from_numpy(im[100:164,100:164]*2-1).permute(2,0,1) for im in ims]),FACTOR)
NV=torch.randn(XV.shape,generator=torch.Generator().manual_seed(0))
opt=torch.optim.AdamW(u.parameters(),lr=LR,weight_decay=0.01)
t0=time.time()
for step in range(steps):
    x=torch.from_numpy(np.stack([crop() for _ in range(8)])).permute(0,3,1,2)
    x0=F.pixel_unshuffle(x,FACTOR); noise=torch.randn_like(x0); t=torch.randint(0,int(os.environ.get('TMAX','1000')),(8,))
    if 'LOWFRAC' in os.environ:  # this fraction of the batch below LOWT
        low=torch.rand(8)<float(os.environ['LOWFRAC']); t=torch.where(low, torch.randint(0,int(os.environ.get('LOWT','100')),(8,)), t)
    xt=s.add_noise(x0,noise,t)
    tgt=x0 if pred=='sample' else s.get_velocity(x0,noise,t)
    loss=((u(xt,t,encoder_hidden_states=ctx0.expand(8,-1,-1)).sample-tgt)**2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if step%1000==0:
        u.eval()
        with torch.no_grad():
            res=[]
            for tt in [999,200,10]:
                t=torch.full((len(XV),),tt); xt=s.add_noise(XV,NV,t); p=u(xt,t,encoder_hidden_states=ctx0.expand(len(XV),-1,-1)).sample
                ac=s.alphas_cumprod[tt]; a,sg=ac.sqrt(),(1-ac).sqrt()
                x0=p if pred=='sample' else a*xt-sg*p
                res.append(round(float(10*np.log10(4/((x0-XV)**2).mean())),2))
        u.train()
        print(step, loss.item(), round(time.time()-t0), 'psnr t999/200/10', res, flush=True)
u.save_pretrained(out+'/unet'); s.save_pretrained(out+'/scheduler')
import shutil
for d in ['text_encoder','restoration_text_encoder']: shutil.copytree(M+'/'+d, out+'/'+d, dirs_exist_ok=True)
