"""Scale-out: a recipe's model x target x device matrix, local or on Ray, and sharded evaluation."""
