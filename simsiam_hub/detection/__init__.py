"""What detection transfer needs that does not import Detectron2: the C4 backbone converter
(``convert``) and generated VOC-format data (``synthetic``)."""
