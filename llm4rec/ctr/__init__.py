"""Classic CTR baselines (MF, Embedding&MLP, Wide&Deep, DeepFM, DCN, NFM, DIN) on the shared period protocol.

features: id encoders that grow period by period, history and genre matrices;
models/: one small nn.Module per model; train: the one trainer; updates: IU / BU-w / FR
as period methods; random_split: the static RecBole-style sanity setting; commands: `llm4rec ctr`.
"""
