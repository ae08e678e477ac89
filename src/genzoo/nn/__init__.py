"""Networks (plain ``nn.Module``s), apart from the LightningModules that train them."""
