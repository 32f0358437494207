/** The parameter lists the benchmark runs on: tensor sizes, in order. */
export interface ParamList {
  name: string;
  /** Which plot series and table group it belongs to. */
  kind: 'size' | 'model';
  sizes: number[];
}

export function total(list: ParamList): number {
  return list.sizes.reduce((a, b) => a + b, 0);
}

/** n parameters in four tensors of (almost) equal size: a large model's shape without per-layer overhead. */
export function fourTensors(n: number, name = n < 1e6 ? `${n / 1e3}k` : `${n / 1e6}M`): ParamList {
  return { name, kind: 'size', sizes: [0, 1, 2, 3].map((i) => Math.floor((n * (i + 1)) / 4) - Math.floor((n * i) / 4)) };
}

/** torchvision's ResNet-50: 53 convolutions, 53 batch norms (weight and bias), the classifier: 161 tensors. */
export function resnet50(): ParamList {
  const sizes: number[] = [];
  const conv = (out: number, inp: number, k: number) => {
    sizes.push(out * inp * k * k);
    sizes.push(out, out); // its batch norm's weight and bias
  };
  conv(64, 3, 7);
  let inp = 64;
  for (const [planes, blocks] of [[64, 3], [128, 4], [256, 6], [512, 3]]) {
    for (let b = 0; b < blocks; b++) {
      conv(planes, inp, 1);
      conv(planes, planes, 3);
      conv(planes * 4, planes, 1);
      if (b === 0) conv(planes * 4, inp, 1); // the downsampling shortcut
      inp = planes * 4;
    }
  }
  sizes.push(1000 * 2048, 1000);
  return { name: 'ResNet-50 (161 tensors)', kind: 'model', sizes };
}

/** Four GPT-2-small blocks (d = 768): layer norms, attention and MLP weights and biases, 48 tensors. */
export function transformerBlocks(blocks = 4, d = 768): ParamList {
  const sizes: number[] = [];
  for (let b = 0; b < blocks; b++) {
    sizes.push(d, d); // ln_1
    sizes.push(d * 3 * d, 3 * d); // attention qkv
    sizes.push(d * d, d); // attention projection
    sizes.push(d, d); // ln_2
    sizes.push(d * 4 * d, 4 * d); // MLP up
    sizes.push(4 * d * d, d); // MLP down
  }
  return { name: `Transformer (${blocks} GPT-2 blocks, ${sizes.length} tensors)`, kind: 'model', sizes };
}
