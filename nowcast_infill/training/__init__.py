"""Training: the trainable LightningModule of networks (`module.RadarModule`), learning-rate
rules (`lr`), and the callbacks of the training config (`callbacks`, `clock`)."""
